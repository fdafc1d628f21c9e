"""The generated megakernel compiles to an sm_90a cubin with no local-memory spills.

Runs without a GPU (nvcc only). Covers the tiny test configs of both families, the built-in
default model and the llama-3.2-1b and qwen3-8b presets, through `eventkernel compile`.
"""
from __future__ import annotations

import json
import shutil

import pytest

from eventkernel.cuda.aot import KERNEL
from eventkernel.cuda.compile import parse_ptxas_report
from eventkernel.serve.cli import main

pytestmark = pytest.mark.skipif(shutil.which("nvcc") is None,
                                reason="nvcc (CUDA 13 toolkit) is not installed")


@pytest.mark.parametrize("model", ["tiny-llama", "tiny-qwen3", "default", "llama-3.2-1b",
                                   "qwen3-8b"])
def test_compile_writes_cubin_without_spills(model, tmp_path, capsys):
    if model == "default":                 # SmolLM2-135M: hidden 576, GQA group 3
        from eventkernel.models.default import default_model_path
        model = str(default_model_path())
    elif model.startswith("tiny"):
        from eventkernel.models.presets import tiny_config
        config = tmp_path / "config.json"
        config.write_text(json.dumps(tiny_config(model.split("-")[1])))
        model = str(config)
    out = tmp_path / "kernel"
    assert main(["compile", model, "--out", str(out), "--max-tokens", "16", "--max-seqs", "8",
                 "--max-context", "1024"]) == 0
    report = capsys.readouterr().out
    assert (out / f"{KERNEL}.cubin").stat().st_size > 0
    assert (out / f"{KERNEL}.cu").read_text().count("case ") > 5
    assert "spill stores 0 B, spill loads 0 B" in report
    assert "stack frame 0 B" in report


def test_ptxas_report_parsing_sees_spills():
    log = ("ptxas info    : Compiling entry function 'ek_step' for 'sm_90a'\n"
           "ptxas info    : Function properties for ek_step\n"
           "    16 bytes stack frame, 24 bytes spill stores, 24 bytes spill loads\n"
           "ptxas info    : Used 255 registers, used 1 barriers, 128 bytes smem\n")
    usage = parse_ptxas_report(log)["ek_step"]
    assert (usage.spill_stores, usage.spill_loads, usage.registers) == (24, 24, 255)
