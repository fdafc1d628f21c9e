"""Model names: resolving reads only the config (fast, weights untouched); a cut-short GGUF
file says so."""
import shutil
import time

import pytest
import torch

from eventkernel.models import checkpoint as checkpoint_module
from eventkernel.models.default import default_model_path
from eventkernel.models.errors import CheckpointNotFoundError, TruncatedFileError
from eventkernel.models.gguf_file import SkippedArray, read_gguf
from eventkernel.models.source import load_weights, resolve_model


@pytest.fixture(scope="module")
def gguf_path():
    return default_model_path()


def test_header_reader_agrees_with_gguf_reader(gguf_path):
    import gguf

    reference = gguf.GGUFReader(gguf_path)
    ours = read_gguf(gguf_path, arrays=("tokenizer.ggml.merges",))
    fields = {k: f for k, f in reference.fields.items() if not k.startswith("GGUF.")}
    assert set(ours.metadata) == set(fields)
    for key, field in fields.items():
        value, expected = ours.metadata[key], field.contents()
        if isinstance(value, SkippedArray):
            assert len(value) == len(expected), key
        elif isinstance(value, float):
            assert value == pytest.approx(expected, rel=1e-7), key
        else:
            assert value == expected, key
    assert len(ours.tensors) == len(reference.tensors)
    for mine, theirs in zip(ours.tensors, reference.tensors):
        assert mine.name == theirs.name
        assert mine.shape == tuple(int(d) for d in reversed(theirs.shape))
        assert (mine.ggml_type, mine.offset, mine.nbytes) == \
            (theirs.tensor_type, theirs.data_offset, theirs.n_bytes)
    first = ours.tensors[0]
    assert ours.tensor_bytes(first).tobytes() == reference.tensors[0].data.tobytes()


def test_resolve_builtin_reads_only_the_header(gguf_path, monkeypatch):
    def no_weights(*args, **kwargs):
        raise AssertionError("resolve_model read weights")

    monkeypatch.setattr(checkpoint_module, "_dequantize", no_weights)
    monkeypatch.setattr("eventkernel.models.gguf_file.GGUFFile.tensor_bytes", no_weights)
    resolve_model(None)
    start = time.perf_counter()
    source = resolve_model(None)
    elapsed = time.perf_counter() - start
    assert source.kind == "builtin" and source.path == gguf_path and not source.random_weights
    config = source.config
    assert (config.arch, config.num_layers, config.hidden_size, config.num_heads,
            config.num_kv_heads, config.head_dim, config.vocab_size) == \
        ("llama", 30, 576, 9, 3, 64, 49152)
    assert config.tie_word_embeddings and (config.bos_token_id, config.eos_token_id) == (1, 2)
    assert source.hf_config == config.to_hf()
    assert elapsed < 1.0, f"resolving the built-in model took {elapsed:.2f} s"


def test_preset_and_unknown_names():
    source = resolve_model("tiny-qwen3")
    assert source.random_weights and "random weights" in source.describe()
    weights = load_weights(source, torch.bfloat16)
    assert {w.dtype for w in weights.weights.values()} == {torch.bfloat16}
    assert weights.model_config == source.config
    with pytest.raises(CheckpointNotFoundError, match="downloads nothing"):
        resolve_model("someone/not-a-model-here")


@pytest.mark.parametrize("keep", [100_000, 20_000_000])
def test_truncated_gguf_says_cut_short(tmp_path, gguf_path, keep):
    """Cut inside the header (metadata) and inside the tensor data."""
    cut = tmp_path / "cut.gguf"
    with open(gguf_path, "rb") as src, open(cut, "wb") as dst:
        dst.write(src.read(keep))
    with pytest.raises(TruncatedFileError, match="is cut short") as info:
        resolve_model(str(cut))
    message = str(info.value)
    assert f"{keep:,} bytes" in message and "again" in message
    assert "dtype" not in message
    with pytest.raises(TruncatedFileError, match="is cut short"):
        checkpoint_module.load_checkpoint(cut, use_cache=False)


def test_directory_with_one_gguf(tmp_path, gguf_path):
    copy = tmp_path / "model" / "copy.gguf"
    copy.parent.mkdir()
    shutil.copyfile(gguf_path, copy)
    assert resolve_model(str(copy.parent)).path == copy
    assert resolve_model(str(copy.parent)).kind == "gguf"
