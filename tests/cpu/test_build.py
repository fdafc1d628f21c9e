"""The composition root: one set of defaults, every front end's build through it."""
from __future__ import annotations

import json

import pytest

import eventkernel.build as build_module
from eventkernel.build import BuildError, BuildOptions, build, plan_build
from eventkernel.ir.graph import DType
from eventkernel.models.presets import preset_config, tiny_config


def test_defaults_are_one_dataclass_the_cli_reads():
    from eventkernel.serve.cli import build_parser
    options = BuildOptions()
    assert (options.backend, options.max_tokens_per_step, options.max_seqs,
            options.max_context, options.page_size) == ("auto", 64, 8, None, 16)
    args = build_parser().parse_args(["inspect", "tiny-llama"])
    assert (args.max_tokens, args.max_seqs, args.page_size, args.max_context) == (64, 8, 16, None)


def test_a_program_for_the_gpu_plans_without_one(monkeypatch):
    monkeypatch.setattr(build_module, "cuda_problem", lambda: "no CUDA GPU is visible")
    plan = plan_build("llama-3.2-1b", BuildOptions(backend="cuda"), stage="compiled")
    assert plan.backend == "cuda" and plan.target.num_workers == build_module.HOPPER_SM_COUNT
    assert plan.limits.dtype is DType.BF16 and plan.limits.max_context == 4096
    with pytest.raises(BuildError, match="checked for stage 'compiled' only"):
        build(plan, stage="backend")
    with pytest.raises(BuildError, match="cannot run here"):
        plan_build("llama-3.2-1b", BuildOptions(backend="cuda"))
    with pytest.raises(BuildError, match="CUDA backend runs bf16"):
        plan_build("llama-3.2-1b", BuildOptions(backend="cuda", dtype="f32"), stage="program")


@pytest.mark.parametrize("kind", ["name", "dict", "config", "json"])
def test_a_model_may_be_named_or_given_as_shapes(kind, tmp_path):
    from eventkernel.models.config import ModelConfig
    cfg = preset_config("tiny-qwen3")
    model = {"name": "tiny-qwen3", "dict": cfg, "config": ModelConfig.from_hf(cfg)}.get(kind)
    if kind == "json":
        model = tmp_path / "config.json"
        model.write_text(json.dumps(cfg))
        model = str(model)
    plan = plan_build(model, BuildOptions(backend="cpu"))
    assert plan.source.random_weights and plan.config == ModelConfig.from_hf(cfg)


def test_the_bench_runner_builds_what_build_builds():
    from eventkernel.bench.megakernel import MegakernelRunner
    config = tiny_config("llama")
    runner = MegakernelRunner(max_tokens=4, max_context=64, target={"waves": 2})
    program = runner.program(config, 8)
    options = BuildOptions(backend="cuda", max_tokens_per_step=4, max_seqs=4, max_context=80,
                           dtype="bf16", num_workers=8, target={"waves": 2})
    from eventkernel.cuda.codegen import generate
    same = build(config, options, stage="program").program
    assert generate(program).source == generate(same).source
    assert runner.options_for(8) == options


@pytest.mark.parametrize("kwargs, message", [
    ({"target": {"bogus": 1}}, "unknown or reserved"),
    ({"target": {"num_workers": 3}}, "unknown or reserved"),
    ({"kernel_options": (1,)}, "kernel_options must be strings"),
    ({"trace": 1}, "trace must be true or false"),
    ({"page_size": 0}, "page_size must be a positive integer"),
])
def test_options_check_themselves(kwargs, message):
    with pytest.raises(BuildError, match=message):
        BuildOptions(**kwargs)


def test_a_config_only_directory_compiles_but_does_not_run(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(preset_config("tiny-llama")))
    assert plan_build(str(tmp_path), BuildOptions(backend="cpu"), stage="compiled")
    with pytest.raises(ValueError, match="safetensors"):
        plan_build(str(tmp_path), BuildOptions(backend="cpu"))      # no weights: no random ones
