"""The GPU runtime lives in headers: Python emits tables and a uniform dispatch only, and
the only build switches are the modes EK_DEBUG and EK_TRACE (tuning is KernelTuning)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from eventkernel.compiler import compile_model
from eventkernel.cuda.codegen import generate
from eventkernel.cuda.tuning import KernelTuning
from eventkernel.ir.graph import DType
from eventkernel.lower import Target
from eventkernel.models.config import Limits, ModelConfig
from eventkernel.models.presets import tiny_config

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "eventkernel"
MODES = {"EK_DEBUG", "EK_TRACE"}
# CUDA runtime source that must live in include/, never in a Python string.
CUDA_IN_PYTHON = ("__global__", "asm volatile", "__syncthreads", "__shared__")


def _program(arch: str = "qwen3"):
    config = ModelConfig.from_hf(tiny_config(arch))
    limits = Limits(max_tokens=64, max_seqs=8, max_context=256, dtype=DType.BF16)
    return compile_model(config, limits, Target(num_workers=16)).program


def test_no_python_file_holds_cuda_runtime_source():
    offenders = [f"{path.relative_to(ROOT)}: {word}" for path in PACKAGE.rglob("*.py")
                 for word in CUDA_IN_PYTHON if word in path.read_text()]
    assert not offenders, offenders


def test_no_build_knob_beyond_the_modes():
    # NOTE: tests/gpu/test_task_templates.py is another owner's; it still passes
    # -DEK_WAIT_MAX_SPINS (to become tuning=KernelTuning(wait_max_spins=...)).
    files = [p for p in PACKAGE.rglob("*") if p.suffix in (".py", ".cuh", ".cu")]
    files += [p for p in (ROOT / "scripts").rglob("*.py")]
    files += [p for p in (ROOT / "tests" / "cpu").rglob("*.py") if p != Path(__file__)]
    knob = re.compile(r"#\s*(?:ifndef|ifdef|if|elif|define)\s+(?:defined\s*\(?\s*)?(EK_\w+)"
                      r"|-DEK_(\w+)")
    found = set()
    for path in files:
        for match in knob.finditer(path.read_text()):
            name = match.group(1) or "EK_" + match.group(2)
            if name not in MODES:
                found.add(f"{path.relative_to(ROOT)}: {name}")
    assert not found, sorted(found)


def test_generated_dispatch_is_one_line_per_kind():
    ks = generate(_program())
    kinds = range(len(ks.kinds))
    assert any(t.startswith("LinearTask<") for t in ks.kinds)
    for k in kinds:
        assert (f"case {k}: ok = Runner<Kind{k}>::run(kind{k}_args(d.slot), shape, x, e, bt, "
                f"counters, dbg, smem); break;") in ks.source
        assert f"case {k}: Runner<Kind{k}>::l2_prefetch(kind{k}_args(d.slot), shape, d);" \
            in ks.source
    assert "GemvMma" not in ks.source and "DecodeGemv" not in ks.source
    assert ks.num_smem_entries == len(ks.kinds)
    assert ks.source.rstrip().endswith('#include "runtime/megakernel.cuh"')


def test_generated_source_declares_its_tuning_and_mode_first():
    program = _program("llama")
    default = generate(program).source
    tuned = generate(program, trace=True, tuning=KernelTuning(lookahead=2)).source
    include = default.index('#include "eventkernel.cuh"')
    assert default.index("namespace ek::tuning {") < include
    assert "kLookahead = 1;" in default and "#define EK_TRACE" not in default
    assert "kLookahead = 2;" in tuned
    assert tuned.index("#define EK_TRACE") < tuned.index('#include "eventkernel.cuh"')


def test_compile_takes_no_define_options():
    import inspect

    from eventkernel.cuda import compile as compile_module
    from eventkernel.cuda.backend import CudaBackend
    for function in (compile_module.compile_cuda, compile_module.compile_with_nvcc,
                     CudaBackend.__init__):
        params = inspect.signature(function).parameters
        assert "options" not in params and "tuning" in params
    with pytest.raises(TypeError):
        compile_module.compile_with_nvcc("", options=("-DEK_LOOKAHEAD=2",))


def test_cuda_imports_nothing_from_serve_or_bench():
    pattern = re.compile(r"^\s*(?:from|import)\s+eventkernel\.(serve|bench)\b", re.M)
    offenders = [str(p.relative_to(ROOT)) for p in (PACKAGE / "cuda").rglob("*.py")
                 if pattern.search(p.read_text()) and p.name != "aot.py"]
    # NOTE: aot.py's compile_command (serve.inspect.resolve_config) belongs to another change.
    assert not offenders, offenders
