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
