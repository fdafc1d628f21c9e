"""The command line: inspect and generate, and their errors."""
from __future__ import annotations

import pytest

from eventkernel.serve.cli import main


def test_inspect_preset_prints_verified(capsys):
    assert main(["inspect", "llama-3.2-1b", "--max-tokens", "8", "--max-seqs", "2",
                 "--max-context", "512"]) == 0
    out = capsys.readouterr().out
    assert out.count("verified") == 2
    assert "event tensors" in out and "static schedule on 132 workers" in out


@pytest.mark.parametrize("argv, message", [
    (["inspect", "no-such-model"], "not a preset"),
    (["inspect", "llama-3.2-1b", "--max-tokens", "0"], "max_tokens_per_step must be a positive"),
    (["inspect", "llama-3.2-1b", "--max-seqs", "9", "--max-tokens", "8"], "cannot exceed"),
])
def test_inspect_bad_input(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_inspect_unsupported_architecture(tmp_path, capsys):
    (tmp_path / "config.json").write_text('{"model_type": "gpt2"}')
    assert main(["inspect", str(tmp_path)]) == 2
    assert "unsupported" in capsys.readouterr().err


def test_generate_streams_and_reports(capsys):
    assert main(["generate", "What is the capital of France?", "--max-tokens", "12",
                 "--backend", "cpu", "--max-context", "128"]) == 0
    captured = capsys.readouterr()
    assert "Paris" in captured.out
    assert "tok/s" in captured.err and "backend cpu" in captured.err


def test_generate_rejects_bad_max_tokens(capsys):
    assert main(["generate", "hi", "--max-tokens", "0", "--backend", "cpu"]) == 2
    assert "max_tokens" in capsys.readouterr().err


def test_bench_trace_without_gpu_is_one_clear_error(capsys):
    import torch
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: --trace would run")
    assert main(["bench", "--models", "llama-3.2-1b", "--trace", "t.json"]) == 2
    assert "--trace needs a CUDA GPU" in capsys.readouterr().err


# --- generate: bad input is one line and exit code 2, before any weight is read ----------

@pytest.fixture
def no_weights(monkeypatch):
    import eventkernel.build as build_module

    def read(*args, **kwargs):
        raise AssertionError("weights were read before the bad input was noticed")
    monkeypatch.setattr(build_module, "_graph_weights", read)


@pytest.mark.parametrize("args, message", [
    (["--max-context", "0"], "max_context must be a positive integer, got 0"),
    (["--max-context", "100000"], "max_context 100000 is over the 1024 positions"),
    (["--max-tokens", str(10**9)], "--max-tokens 1000000000 leaves no room for a prompt"),
    (["--max-tokens", "10**9"], "argument --max-tokens: invalid int value"),
    (["--max-tokens", "0"], "max_tokens must be an integer >= 1"),
    (["--temperature", "-1"], "temperature must be a finite number >= 0"),
    (["--top-p", "2"], "top_p must be in"),
    (["--backend", "tpu"], "argument --backend: invalid choice"),
    (["--model", "no-such-org/no-such-model"], "eventkernel downloads nothing"),
    (["--model", "/no/such/dir"], "not in the local Hugging Face cache"),
    (["--max-context", "128", "--no-chat", "word " * 200], "over the 128 tokens of context"),
    ([""], "the prompt is empty"),
])
def test_generate_bad_input_is_one_line(capsys, no_weights, args, message):
    argv = ["generate", "--model", "tiny-llama", "--backend", "cpu", *args]
    if "--model" in args:
        argv = ["generate", "--backend", "cpu", *args]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("eventkernel generate: error: ") and err.count("\n") == 1, err
    assert message in err and "Traceback" not in err


def test_generate_with_a_preset_says_random_weights_and_reports_the_split(capsys):
    assert main(["generate", "hi", "--model", "tiny-llama", "--backend", "cpu",
                 "--max-tokens", "3", "--max-context", "64", "--verbose"]) == 0
    captured = capsys.readouterr()
    assert "random weights" in captured.err and "ready in" in captured.err
    split = next(line for line in captured.err.splitlines() if "start-up:" in line)
    for part in ("resolve", "tokenizer", "compile", "weights", "backend", "first step"):
        assert part in split
    assert captured.out.endswith("\n")


def test_bench_without_a_gpu_says_why_and_writes_to_out(tmp_path, capsys):
    import torch
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the megakernel rows would run")
    out = tmp_path / "deep" / "result.json"
    assert main(["bench", "--models", "tiny-llama", "--quick", "--baselines", "floor",
                 "--copy-bytes", "1000000", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "no megakernel rows: no CUDA GPU is visible" in printed
    assert out.is_file() and f"results: {out}" in printed


# --- Ctrl-C: one line, exit code 130, the text so far ending with a newline -------------

def _interrupted(after_ready: bool):
    import os
    import pathlib
    import signal
    import subprocess
    import sys

    root = pathlib.Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "eventkernel.serve.cli", "generate", "hello", "--model",
         "tiny-llama", "--backend", "cpu", "--no-chat", "--max-tokens", "900", "--verbose"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
        # NOTE: a shell's background job inherits SIGINT ignored; the child must not.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    err = ""
    # NOTE: "loading": main() runs (a Ctrl-C while Python itself starts is Python's).
    while ("ready in" if after_ready else "loading") not in err:
        line = proc.stderr.readline()
        assert line, f"the command ended too early: {err}"
        err += line
    if after_ready:
        first = proc.stdout.read(1)                 # it has started streaming
        assert first, "no text was streamed"
    proc.send_signal(signal.SIGINT)
    out, rest = proc.communicate(timeout=60)
    return proc.returncode, (first + out) if after_ready else out, err + rest


@pytest.mark.parametrize("after_ready", [False, True], ids=["during-load", "while-streaming"])
def test_ctrl_c_is_one_line_and_exit_code_130(after_ready):
    code, out, err = _interrupted(after_ready)
    assert code == 130, err
    assert "Traceback" not in err
    assert err.rstrip("\n").splitlines()[-1] == "eventkernel generate: interrupted"
    assert out == "" or out.endswith("\n")
    if after_ready:
        assert len(out) > 1
    else:
        assert "ready in" not in err and out == ""        # it stopped in the middle of loading


@pytest.mark.parametrize("argv, message", [
    (["bench", "--models", "nope"], "eventkernel bench: error: argument --models: unknown"),
    (["compile", "tiny-llama", "--max-context", "0"], "max_context must be a positive"),
    (["inspect", "tiny-llama", "--workers", "0"], "num_workers must be a positive"),
    (["frobnicate"], "eventkernel: error: argument command: invalid choice"),
])
def test_other_commands_bad_input_is_one_line(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
