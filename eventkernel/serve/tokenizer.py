"""Text <-> token ids, chat templates and streaming detokenization.

A thin layer over a `transformers` fast tokenizer, built offline from a Hugging Face model
directory or from a GGUF file's embedded tokenizer metadata. A GGUF file's tokenizer is
converted once (vocabulary, merges, special tokens and chat template read with
`models.gguf_file`, built with transformers' GGUF converters) and cached as a tokenizer.json
folder (`models.cache`), which later loads in a fraction of a second.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any, Iterable, Sequence

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
# GGUF metadata the tokenizer is built from: the vocabulary arrays are read in full.
_GGUF_ARRAYS = ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type",
                "tokenizer.ggml.merges", "tokenizer.ggml.precompiled_charsmap")
_GGUF_SPECIAL_TOKENS = {"bos_token": "bos_token_id", "eos_token": "eos_token_id",
                        "unk_token": "unknown_token_id", "pad_token": "padding_token_id"}


class Tokenizer:
    """Encode, decode and apply the chat template of one model.

    `eos_token_ids` holds every id that ends a generation: the tokenizer's eos token plus
    those the model directory's generation_config.json lists.
    """

    def __init__(self, hf_tokenizer: Any, eos_token_ids: Iterable[int] = ()) -> None:
        self._hf = hf_tokenizer
        eos = set(eos_token_ids)
        if hf_tokenizer.eos_token_id is not None:
            eos.add(hf_tokenizer.eos_token_id)
        self.eos_token_ids: frozenset[int] = frozenset(eos)
        self.bos_token_id: int | None = hf_tokenizer.bos_token_id

    @property
    def vocab_size(self) -> int:
        """Number of token ids the tokenizer can produce (added tokens included)."""
        return len(self._hf)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of `text`; `add_special_tokens` adds bos/eos as the tokenizer is set up."""
        return list(self._hf.encode(text, add_special_tokens=add_special_tokens))

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Text of `ids`."""
        return self._hf.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def render_chat(self, messages: list[dict[str, Any]], **template_kwargs: Any) -> str:
        """The prompt text the chat template makes of `messages`, ending with the
        assistant's turn header (add_generation_prompt=True)."""
        if not self._hf.chat_template:
            raise ValueError(
                "this tokenizer has no chat template; send a plain prompt (completions) "
                "instead of chat messages, or use a model that ships a chat template"
            )
        return self._hf.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, **template_kwargs
        )

    def apply_chat_template(
        self, messages: list[dict[str, Any]], **template_kwargs: Any
    ) -> list[int]:
        """Token ids of the chat prompt for `messages` (add_generation_prompt=True).

        Extra keyword arguments reach the template (for example `enable_thinking` for Qwen3).
        """
        # NOTE: the rendered template already holds its special tokens as text.
        return self.encode(self.render_chat(messages, **template_kwargs), add_special_tokens=False)

    def stream_decoder(self, skip_special_tokens: bool = True) -> StreamDecoder:
        """A fresh incremental detokenizer for one generated sequence."""
        return StreamDecoder(self, skip_special_tokens=skip_special_tokens)


class StreamDecoder:
    """Turns token ids, appended one at a time, into text deltas for streaming.

    A delta is released only when it does not end in an incomplete UTF-8 sequence (shown
    by decoders as U+FFFD), so multi-byte characters split over tokens arrive whole. Each
    step decodes a short window starting a token before the last release, so word-boundary
    spaces come out as they do when the whole sequence is decoded.
    """

    def __init__(self, tokenizer: Tokenizer, skip_special_tokens: bool = True) -> None:
        self._tokenizer = tokenizer
        self._skip_special_tokens = skip_special_tokens
        self._ids: list[int] = []
        self._prefix_offset = 0  # start of the decode window
        self._read_offset = 0  # tokens before this are already released as text
        self.text = ""  # all text released so far

    def push(self, token_id: int) -> str:
        """Append one token id; return the text it completes (may be empty)."""
        self._ids.append(token_id)
        prefix_text = self._decode(self._ids[self._prefix_offset:self._read_offset])
        new_text = self._decode(self._ids[self._prefix_offset:])
        if len(new_text) <= len(prefix_text) or new_text.endswith("\ufffd"):
            return ""
        delta = new_text[len(prefix_text):]
        self._prefix_offset, self._read_offset = self._read_offset, len(self._ids)
        self.text += delta
        return delta

    def flush(self) -> str:
        """Release whatever is held back (an incomplete character decodes as U+FFFD)."""
        prefix_text = self._decode(self._ids[self._prefix_offset:self._read_offset])
        new_text = self._decode(self._ids[self._prefix_offset:])
        self._prefix_offset = self._read_offset = len(self._ids)
        delta = new_text[len(prefix_text):]
        self.text += delta
        return delta

    def _decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=self._skip_special_tokens)


def load_tokenizer(path: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None,
                   use_cache: bool = True) -> Tokenizer:
    """Build the tokenizer of a Hugging Face model directory or a `.gguf` file, offline.

    A directory holding one `.gguf` file and no tokenizer.json is read as that GGUF. A GGUF
    file's converted tokenizer is cached under `cache_dir` (None: `~/.cache/eventkernel`)
    unless `use_cache` is false.
    """
    path = pathlib.Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"tokenizer path {path} does not exist")
    if path.is_dir() and not any((path / name).is_file() for name in _TOKENIZER_FILES):
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) != 1:
            raise FileNotFoundError(
                f"{path} has no tokenizer.json or tokenizer_config.json (and not exactly one "
                ".gguf file); pass a model directory that ships its tokenizer or a .gguf file"
            )
        path = ggufs[0]
    if path.is_file():
        if path.suffix != ".gguf":
            raise ValueError(f"{path} is neither a model directory nor a .gguf file")
        return Tokenizer(_gguf_tokenizer(path, cache_dir if use_cache else False))
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return Tokenizer(hf, _generation_eos_ids(path))


def _gguf_tokenizer(file: pathlib.Path, cache_dir: str | os.PathLike | None | bool) -> Any:
    """The transformers tokenizer of a GGUF file, from the cache when a whole entry is there."""
    from eventkernel.models.cache import cache_path, remove, write_atomically

    if cache_dir is False:
        return convert_gguf_tokenizer(file)
    entry = cache_path(cache_dir, file, "tokenizer")
    if (entry / "complete").is_file():
        try:
            return _load_saved(entry)
        except Exception:  # noqa: BLE001 -- a damaged entry of any kind is rebuilt
            remove(entry)
    hf = convert_gguf_tokenizer(file)

    def save(folder: pathlib.Path) -> None:
        hf.save_pretrained(folder)
        (folder / "complete").write_text("1")

    try:
        write_atomically(entry, save)
    except OSError:
        pass                    # a read-only or full cache costs speed, not correctness
    return hf


def _load_saved(folder: pathlib.Path) -> Any:
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(folder, local_files_only=True)


def convert_gguf_tokenizer(file: pathlib.Path) -> Any:
    """A transformers fast tokenizer from a GGUF file's metadata (no cache).

    The same conversion as ``AutoTokenizer.from_pretrained(dir, gguf_file=...)``: the
    metadata is grouped under transformers' names and handed to its GGUF converter, but read
    with eventkernel's header reader (a fraction of the time).
    """
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from eventkernel.models.gguf_file import read_gguf

    hooks = _transformers_gguf_hooks()
    if hooks is None:           # a transformers whose GGUF internals moved: its public path
        return AutoTokenizer.from_pretrained(file.parent, gguf_file=file.name)
    renaming, convert = hooks
    metadata = read_gguf(file, arrays=_GGUF_ARRAYS).metadata
    grouped = {group: {name: metadata[f"tokenizer.{key}"] for key, name in renames.items()
                       if f"tokenizer.{key}" in metadata}
               for group, renames in renaming.items()}
    tokenizer, config = grouped["tokenizer"], grouped["tokenizer_config"]
    if "tokens" not in tokenizer:
        raise ValueError(f"{file} has no tokenizer (no tokenizer.ggml.tokens metadata); pass "
                         "a model directory with a tokenizer.json instead")
    if tokenizer.get("tokenizer_type") == "llama":
        # NOTE: as transformers: llama.cpp adds BOS to a sentencepiece vocabulary by default.
        config.setdefault("add_bos_token", True)
    for name, key in _GGUF_SPECIAL_TOKENS.items():
        token_id = metadata.get(f"tokenizer.ggml.{key}")
        config[name] = tokenizer["tokens"][token_id] if token_id is not None else None
    backend, extra = convert(metadata["general.architecture"], tokenizer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, **config, **extra)


# Where transformers (5.24 on) keeps the GGUF tokenizer renaming table and converter that the
# fast path uses. Earlier releases keep other ones under ``integrations.ggml`` whose converter
# returns different keyword arguments; there the public ``from_pretrained`` path is taken.
_GGUF_HOOK_MODULES = ("transformers.integrations.gguf.gguf_tokenizer_mapping",)


def _transformers_gguf_hooks() -> tuple[dict, Any] | None:
    """``(GGUF_TOKENIZER_MAPPING, convert_gguf_tokenizer)`` of the installed transformers,
    or None when no known module has both."""
    import importlib

    for name in _GGUF_HOOK_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        renaming = getattr(module, "GGUF_TOKENIZER_MAPPING", None)
        convert = getattr(module, "convert_gguf_tokenizer", None)
        if isinstance(renaming, dict) and callable(convert):
            return renaming, convert
    return None


def _generation_eos_ids(directory: pathlib.Path) -> list[int]:
    """eos ids from generation_config.json (chat models often list several there)."""
    file = directory / "generation_config.json"
    if not file.is_file():
        return []
    try:
        eos = json.loads(file.read_text()).get("eos_token_id")
    except json.JSONDecodeError as error:
        raise ValueError(f"{file} is not valid JSON: {error}") from None
    if eos is None:
        return []
    return [eos] if isinstance(eos, int) else list(eos)


class ByteTokenizer:
    """UTF-8 bytes as token ids: the tokenizer of a preset (random weights, no tokenizer of
    its own). Ids at or over 256 and the special ids decode to nothing; the chat template
    is plain ``<|role|>`` headers."""

    def __init__(self, vocab_size: int, eos_token_id: int | None = None,
                 bos_token_id: int | None = None) -> None:
        if vocab_size < 256:
            raise ValueError(f"a byte tokenizer needs a vocabulary of at least 256 ids, the "
                             f"model has {vocab_size}")
        self.vocab_size = vocab_size
        self.eos_token_ids: frozenset[int] = frozenset(
            () if eos_token_id is None else (eos_token_id,))
        self.bos_token_id = bos_token_id
        self._special = self.eos_token_ids | ({bos_token_id} - {None})

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """The UTF-8 bytes of ``text`` (no special tokens are added)."""
        return list(text.encode("utf-8"))

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        kept = bytes(i for i in ids if i < 256
                     and not (skip_special_tokens and i in self._special))
        return kept.decode("utf-8", errors="replace")

    def render_chat(self, messages: list[dict[str, Any]], **template_kwargs: Any) -> str:
        turns = "".join(f"<|{m['role']}|>\n{m['content']}\n" for m in messages)
        return turns + "<|assistant|>\n"

    def apply_chat_template(self, messages: list[dict[str, Any]],
                            **template_kwargs: Any) -> list[int]:
        return self.encode(self.render_chat(messages))

    def stream_decoder(self, skip_special_tokens: bool = True) -> StreamDecoder:
        return StreamDecoder(self, skip_special_tokens)  # type: ignore[arg-type]
