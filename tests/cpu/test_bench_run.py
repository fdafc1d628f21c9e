"""The bench command end to end on a CPU, eager, with tiny models and a plugged-in runner."""

import json

import pytest
import torch

from eventkernel.bench import run
from eventkernel.bench.baseline import TorchCompileRunner


def test_main_with_hook(tmp_path, capsys):
    calls = []
    inner = TorchCompileRunner("cpu", dtype=torch.float32, compile=False, max_batch=2)

    def hook(config, num_tokens, context_len):
        calls.append((config["model_type"], num_tokens, context_len))
        return inner(config, num_tokens, context_len)

    out = tmp_path / "r.json"
    argv = ["--models", "tiny-llama,tiny-qwen3", "--tokens", "1,2", "--contexts", "8",
            "--device", "cpu", "--eager", "--dtype", "float32", "--iters", "2", "--warmup", "1",
            "--copy-bytes", str(1 << 20), "--out", str(out)]
    with torch.no_grad():
        assert run.main(argv, eventkernel_runner=hook) == 0
    data = json.loads(out.read_text())
    systems = {(r["model"], r["system"]) for r in data["results"]}
    assert systems == {(m, s) for m in ("tiny-llama", "tiny-qwen3")
                       for s in ("floor", "eventkernel", "torch-compile-eager", "hf-eager")}
    assert len(data["results"]) == 2 * 4 * 2
    assert calls == [("llama", 1, 8), ("llama", 2, 8), ("qwen3", 1, 8), ("qwen3", 2, 8)]
    warmup = data["warmups"][0]
    assert set(warmup["per_batch_s"]) == {"1", "2"}
    assert warmup["all_ready_s"] >= warmup["first_step_s"] > 0
    assert data["environment"]["command_line"][:2] == ["eventkernel", "bench"]
    assert "x vs hf-eager" in capsys.readouterr().out


def test_time_limit_skips_and_keeps_floor(tmp_path):
    out = tmp_path / "r.json"
    argv = ["--models", "tiny-qwen3", "--tokens", "1", "--contexts", "8", "--device", "cpu",
            "--eager", "--time-limit", "0", "--copy-bytes", "4096", "--out", str(out)]
    assert run.main(argv) == 1
    data = json.loads(out.read_text())
    assert [r["system"] for r in data["results"]] == ["floor"]
    assert {e["error"] for e in data["errors"]} == {"skipped: --time-limit"}


def test_failures_are_recorded_not_fatal(tmp_path):
    def broken(config, num_tokens, context_len):
        raise RuntimeError("no megakernel here")

    out = tmp_path / "r.json"
    argv = ["--models", "tiny-llama", "--tokens", "1", "--contexts", "8", "--device", "cpu",
            "--baselines", "floor", "--iters", "1", "--warmup", "0", "--copy-bytes", "4096",
            "--out", str(out)]
    assert run.main(argv, eventkernel_runner=broken) == 1
    data = json.loads(out.read_text())
    assert data["errors"][0]["system"] == "eventkernel"
    assert [r["system"] for r in data["results"]] == ["floor"]
    with pytest.raises(RuntimeError, match="no megakernel"):
        run.main([*argv, "--fail-fast"], eventkernel_runner=broken)


def test_bad_arguments():
    with pytest.raises(SystemExit):
        run.build_parser().parse_args(["--models", "gpt-5"])
    with pytest.raises(SystemExit):
        run.build_parser().parse_args(["--tokens", "0,4"])


def test_quick_defaults():
    options = run.resolve_options(run.build_parser().parse_args(["--quick"]))
    assert (options.tokens, options.contexts, options.iters) == ([1, 16], [512], 20)
    assert options.baselines == ["torch-compile", "floor"]
    full = run.resolve_options(run.build_parser().parse_args([]))
    assert full.baselines == list(run.BASELINES)
    chosen = run.resolve_options(run.build_parser().parse_args(["--quick", "--baselines", "hf"]))
    assert chosen.baselines == ["hf"]
    assert options.out.parent.as_posix() == "bench/results"


def test_sweep_changes_tokens_and_context_together_second():
    points = run.sweep_order([1, 4, 16, 64], [512, 4096])
    assert points[:2] == [(1, 512), (4, 4096)]
    assert sorted(points) == sorted((t, c) for t in (1, 4, 16, 64) for c in (512, 4096))
    assert run.sweep_order([1, 16], [512]) == [(1, 512), (16, 512)]


def test_jobs_run_a_process_per_model_and_merge(tmp_path):
    out = tmp_path / "r.json"
    argv = ["--models", "tiny-llama,tiny-qwen3", "--tokens", "1,2", "--contexts", "8",
            "--device", "cpu", "--eager", "--dtype", "float32", "--iters", "2", "--warmup", "1",
            "--baselines", "torch-compile,floor", "--copy-bytes", str(1 << 20),
            "--out", str(out), "--jobs", "2"]
    options = run.resolve_options(run.build_parser().parse_args(argv))
    report = run.run_jobs(options, argv)
    assert report.errors == []
    assert {(r.model, r.system) for r in report.results} == {
        (m, s) for m in ("tiny-llama", "tiny-qwen3") for s in ("floor", "torch-compile-eager")}
    data = json.loads(out.read_text())
    assert len(data["results"]) == 2 * 2 * 2 and data["wall_s"] > 0
    bandwidths = {r["floor_ms"] / r["bytes_per_step"] for r in data["results"]}
    assert max(bandwidths) == pytest.approx(min(bandwidths))  # one bandwidth for all models
    assert data["environment"]["command_line"][-2:] == ["--jobs", "2"]


def test_without_options():
    argv = ["--models", "a,b", "--jobs=3", "--iters", "5", "--out", "x.json", "--quick"]
    assert run._without_options(argv, ("--models", "--jobs", "--out")) == ["--iters", "5",
                                                                           "--quick"]


def test_merge_keeps_what_the_processes_wrote(tmp_path):
    """run_jobs merges the part files however it stops: present ones in, missing ones as
    errors that say why."""
    from eventkernel.bench.report import BenchReport, Environment, StepResult

    env = Environment.collect("cpu", ["test"])
    part = BenchReport(env, 1e9, [StepResult("tiny-llama", "floor", 1, 8, 1.0, 1.0, 1.0, 1.0,
                                             0, 100, 1.0)])
    parts = tmp_path / "r.parts"
    part.save(parts / "tiny-llama.json")
    options = run.resolve_options(run.build_parser().parse_args(
        ["--models", "tiny-llama,tiny-qwen3,llama-3.2-1b", "--device", "cpu",
         "--out", str(tmp_path / "r.json")]))
    report = BenchReport(env, 1e9)
    run._merge_parts(report, options, parts, ["llama-3.2-1b"], 0.0)
    assert [r.model for r in report.results] == ["tiny-llama"]
    assert [(e["model"], e["error"][:13]) for e in report.errors] == [
        ("tiny-qwen3", "its bench pro"), ("llama-3.2-1b", "not started (")]
    assert BenchReport.load(tmp_path / "r.json").results == report.results
