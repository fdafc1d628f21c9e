"""Tokenizer built from the default GGUF (converted, then from the cache) and from a Hugging
Face directory, against transformers."""

import json

import pytest

from eventkernel.models.default import default_model_path
from eventkernel.serve.tokenizer import StreamDecoder, load_tokenizer

TEXTS = [
    "Hello world",
    "  leading spaces, tabs\tand\nnewlines\n\n",
    "Héllo wörld! 你好，世界 🤖🎉 naïve café",
    "def f(x):\n    return x ** 2  # code",
    "",
]

CHATS = [
    [{"role": "user", "content": "Hi there"}],
    [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And 3+3? 🤔"},
    ],
]


@pytest.fixture(scope="module")
def gguf_path():
    return default_model_path()


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module", params=["converted", "cached"])
def tokenizer(request, gguf_path, cache_dir):
    """The first load converts the GGUF's tokenizer and caches it; the second reads the cache."""
    tok = load_tokenizer(gguf_path, cache_dir=cache_dir)
    entries = list((cache_dir / "tokenizer").iterdir())
    assert len(entries) == 1 and (entries[0] / "tokenizer.json").is_file()
    if request.param == "cached":
        tok = load_tokenizer(gguf_path, cache_dir=cache_dir)
    return tok


@pytest.fixture(scope="module")
def reference(gguf_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)


def _ids(encoded):
    """transformers 5 returns a BatchEncoding from apply_chat_template(tokenize=True)."""
    return list(encoded["input_ids"]) if hasattr(encoded, "keys") else list(encoded)


def test_special_tokens(tokenizer):
    assert tokenizer.eos_token_ids == frozenset({2})  # <|im_end|>
    assert tokenizer.bos_token_id == 1  # <|im_start|>
    assert tokenizer.vocab_size == 49152
    assert tokenizer.decode([1, 2], skip_special_tokens=False) == "<|im_start|><|im_end|>"
    assert tokenizer.decode([1, 2]) == ""


@pytest.mark.parametrize("text", TEXTS)
def test_encode_decode_round_trip(tokenizer, reference, text):
    ids = tokenizer.encode(text)
    assert ids == reference.encode(text)
    assert all(isinstance(i, int) for i in ids)
    assert tokenizer.decode(ids) == text


def test_encode_known_ids(tokenizer):
    assert tokenizer.encode("Hello world") == [19556, 905]
    # the GGUF sets add_bos_token = false, so special tokens add nothing here
    assert tokenizer.encode("Hello world", add_special_tokens=False) == [19556, 905]


@pytest.mark.parametrize("messages", CHATS)
def test_chat_template_matches_transformers(tokenizer, reference, messages):
    expected = _ids(reference.apply_chat_template(messages, add_generation_prompt=True))
    assert tokenizer.apply_chat_template(messages) == expected
    text = tokenizer.render_chat(messages)
    assert text.endswith("<|im_start|>assistant\n")
    assert text.count("<|im_start|>system\n") == 1  # the default system prompt is added once


def test_chat_template_default_system_prompt(tokenizer):
    text = tokenizer.render_chat(CHATS[0])
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")


def test_stream_decoder_matches_full_decode(tokenizer):
    text = TEXTS[2]
    ids = tokenizer.encode(text)
    decoder = tokenizer.stream_decoder()
    assert isinstance(decoder, StreamDecoder)
    deltas = [decoder.push(i) for i in ids]
    deltas.append(decoder.flush())
    assert "".join(deltas) == text == decoder.text
    assert not any("\ufffd" in delta for delta in deltas)
    assert "" in deltas[:-1]  # some characters span several tokens and are held back
    assert "🤖" in deltas or " 🤖" in deltas  # ... and then arrive whole


def test_stream_decoder_flush_releases_incomplete_bytes(tokenizer):
    ids = tokenizer.encode("🤖")
    assert len(ids) > 1
    decoder = StreamDecoder(tokenizer)
    assert decoder.push(ids[0]) == ""
    assert decoder.flush() == "\ufffd"


def test_stream_decoder_keeps_special_tokens_when_asked(tokenizer):
    decoder = tokenizer.stream_decoder(skip_special_tokens=False)
    assert "".join(decoder.push(i) for i in [1, 520, 9531, 2]) == "<|im_start|>assistant<|im_end|>"


def test_hf_directory(tmp_path, reference):
    reference.save_pretrained(tmp_path)
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 0]}))
    tokenizer = load_tokenizer(tmp_path)
    assert tokenizer.eos_token_ids == frozenset({0, 2})
    for text in TEXTS:
        assert tokenizer.encode(text) == reference.encode(text)
    assert tokenizer.apply_chat_template(CHATS[1]) == _ids(
        reference.apply_chat_template(CHATS[1], add_generation_prompt=True)
    )


def test_directory_with_one_gguf(tmp_path, gguf_path, tokenizer, cache_dir):
    (tmp_path / gguf_path.name).symlink_to(gguf_path)
    loaded = load_tokenizer(tmp_path, cache_dir=cache_dir)
    assert loaded.encode(TEXTS[2]) == tokenizer.encode(TEXTS[2])


def test_damaged_cache_entry_is_rebuilt(tmp_path, gguf_path, reference):
    load_tokenizer(gguf_path, cache_dir=tmp_path)
    (entry,) = (tmp_path / "tokenizer").iterdir()
    (entry / "tokenizer.json").write_text('{"truncated')
    tokenizer = load_tokenizer(gguf_path, cache_dir=tmp_path)
    assert tokenizer.encode(TEXTS[2]) == reference.encode(TEXTS[2])
    assert json.loads((entry / "tokenizer.json").read_text())["model"]["type"] == "BPE"


def test_transformers_without_known_gguf_internals(tmp_path, gguf_path, reference, monkeypatch):
    """Where transformers' GGUF tokenizer internals are found nowhere we know, its public
    path builds the same tokenizer."""
    import eventkernel.serve.tokenizer as tokenizer_module

    assert tokenizer_module._transformers_gguf_hooks() is not None   # this install has them
    monkeypatch.setattr(tokenizer_module, "_GGUF_HOOK_MODULES", ("no.such.module",))
    tokenizer = load_tokenizer(gguf_path, cache_dir=tmp_path)
    for text in TEXTS:
        assert tokenizer.encode(text) == reference.encode(text)


def test_cache_dir_is_not_used_when_off(tmp_path, gguf_path):
    load_tokenizer(gguf_path, cache_dir=tmp_path, use_cache=False)
    assert not any(tmp_path.iterdir())


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_tokenizer(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
        load_tokenizer(tmp_path)
    (tmp_path / "vocab.txt").write_text("x")
    with pytest.raises(ValueError, match="neither a model directory nor a .gguf"):
        load_tokenizer(tmp_path / "vocab.txt")
