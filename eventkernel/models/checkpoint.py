"""Load a checkpoint (Hugging Face directory or GGUF file) into one plain form.

Whatever the source, a `Checkpoint` holds its `ModelConfig`, a Hugging Face style `config`
dict made from it, and `weights` under Hugging Face names, so the model builders see one
format. Names and shapes come from the model family's checkpoint table (``models/llama.py``,
``models/qwen3.py``). GGUF tensors are dequantized (``models/dequant.py``) and llama.cpp's
row permutation of q/k projections is undone where the family says so; the result is cached
on disk (``models/cache.py``) so a second load maps one safetensors file instead.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
from typing import Any

import torch

from eventkernel.models.cache import cache_path, remove, write_atomically
from eventkernel.models.config import ModelConfig, parse_config
from eventkernel.models.dequant import dequantize
# NOTE: the error classes moved to models/errors.py; kept here for existing imports.
from eventkernel.models.errors import (  # noqa: F401
    CheckpointError,
    CheckpointNotFoundError,
    ModelConfigError,
    TruncatedFileError,
    UnsupportedArchitectureError,
)
from eventkernel.models.families import FAMILIES
from eventkernel.models.gguf_file import GGUFFile, read_gguf

_IGNORED_HF_TENSORS = re.compile(r".*\.rotary_emb\.inv_freq$")


@dataclasses.dataclass(frozen=True, slots=True)
class Checkpoint:
    """A loaded checkpoint: Hugging Face style config, weights under Hugging Face names.

    `tokenizer_source` is the path to hand to `serve.tokenizer.load_tokenizer` (the model
    directory or the `.gguf` file), or None when the directory ships no tokenizer.
    `lm_head.weight` is absent from `weights` when `config["tie_word_embeddings"]`.
    `config` is `model_config.to_hf()`.
    """

    config: dict[str, Any]
    weights: dict[str, torch.Tensor]
    tokenizer_source: pathlib.Path | None
    path: pathlib.Path
    model_config: ModelConfig | None = None

    @property
    def model_type(self) -> str:
        return self.config["model_type"]


def find_checkpoint(path: str | os.PathLike) -> pathlib.Path:
    """The file or directory ``path`` names: a `.gguf` file or a Hugging Face directory.

    A directory without config.json that holds exactly one `.gguf` file means that file.
    """
    path = pathlib.Path(path).expanduser()
    if not path.exists():
        raise CheckpointNotFoundError(
            f"checkpoint path {path} does not exist; pass a Hugging Face model directory "
            "(config.json + *.safetensors) or a .gguf file"
        )
    if path.is_file():
        if path.suffix != ".gguf":
            raise CheckpointError(
                f"{path} is a file but not a .gguf file; pass a .gguf file or a Hugging Face "
                "model directory"
            )
        return path
    if (path / "config.json").is_file():
        return path
    ggufs = sorted(path.glob("*.gguf"))
    if len(ggufs) == 1:
        return ggufs[0]
    if len(ggufs) > 1:
        names = ", ".join(p.name for p in ggufs)
        raise CheckpointError(f"{path} holds several .gguf files ({names}); pass one of them")
    raise CheckpointNotFoundError(
        f"{path} has no config.json and no .gguf file; pass a Hugging Face model directory "
        "(config.json + *.safetensors) or a .gguf file"
    )


def read_config(path: str | os.PathLike) -> ModelConfig:
    """The `ModelConfig` of a checkpoint, reading only config.json or the GGUF header."""
    path = find_checkpoint(path)
    if path.is_file():
        return _gguf_config(read_gguf(path))
    return _hf_config(path / "config.json")


def load_checkpoint(path: str | os.PathLike, dtype: torch.dtype = torch.float32, *,
                    cache_dir: str | os.PathLike | None = None,
                    use_cache: bool = True,
                    device: str | torch.device = "cpu") -> Checkpoint:
    """Load a Hugging Face model directory, a `.gguf` file, or a directory holding one `.gguf`.

    Weights are returned in `dtype` on `device`. From safetensors each tensor goes to the
    device as it is read (memory-mapped; the host holds one tensor at a time), so a model
    larger than host memory loads straight to the GPU. A GGUF file's dequantized weights are cached under
    `cache_dir` (None: `~/.cache/eventkernel`) unless `use_cache` is false. Raises
    `CheckpointError` (a `ValueError`) or `CheckpointNotFoundError` (also a
    `FileNotFoundError`) with a message that says what is wrong with which file.
    """
    path = find_checkpoint(path)
    if path.is_file():
        checkpoint = _load_gguf(path, dtype, cache_dir if use_cache else False)
        for name in list(checkpoint.weights):          # one tensor at a time
            checkpoint.weights[name] = checkpoint.weights[name].to(device)
        return checkpoint
    return _load_hf_directory(path, dtype, device)


# --- Hugging Face directories ------------------------------------------------------------


def _hf_config(config_file: pathlib.Path) -> ModelConfig:
    try:
        raw = json.loads(config_file.read_text())
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{config_file} is not valid JSON: {error}") from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{config_file} is not a JSON object")
    return parse_config(raw, str(config_file))


def _load_hf_directory(directory: pathlib.Path, dtype: torch.dtype,
                       device: str | torch.device = "cpu") -> Checkpoint:
    from safetensors import safe_open

    config = _hf_config(directory / "config.json")
    files = _safetensors_files(directory)
    weights = {}
    for file in files:
        with safe_open(file, framework="pt") as reader:
            for name in reader.keys():
                if _IGNORED_HF_TENSORS.match(name):
                    continue
                # NOTE: read in the file's dtype, moved and cast one tensor at a time.
                weights[name] = reader.get_tensor(name).to(device=device, dtype=dtype)
    if config.tie_word_embeddings:
        weights.pop("lm_head.weight", None)
    check_weights(config, weights, directory)
    has_tokenizer = any(
        (directory / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")
    )
    return Checkpoint(config.to_hf(), weights, directory if has_tokenizer else None,
                      directory, config)


def _safetensors_files(directory: pathlib.Path) -> list[pathlib.Path]:
    index_file = directory / "model.safetensors.index.json"
    if index_file.is_file():
        try:
            weight_map = json.loads(index_file.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise CheckpointError(
                f"{index_file} is malformed: expected JSON with a 'weight_map' object"
            ) from None
        files = [directory / name for name in sorted(set(weight_map.values()))]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise CheckpointNotFoundError(
                f"{index_file} lists shard(s) that are not in {directory}: {', '.join(missing)}"
            )
        return files
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise CheckpointNotFoundError(
            f"{directory} has config.json but no weights: expected model.safetensors or "
            "model.safetensors.index.json with its shards (.bin checkpoints are not supported; "
            "re-save with save_pretrained(..., safe_serialization=True))"
        )
    return files


# --- GGUF files ----------------------------------------------------------------------------


def _gguf_config(gguf: GGUFFile) -> ModelConfig:
    return ModelConfig.from_gguf(gguf.metadata, {t.name for t in gguf.tensors}, str(gguf.path))


def _load_gguf(file: pathlib.Path, dtype: torch.dtype,
               cache_dir: str | os.PathLike | None | bool) -> Checkpoint:
    gguf = read_gguf(file)
    config = _gguf_config(gguf)
    cached = None if cache_dir is False else cache_path(cache_dir, file, "weights",
                                                        ".safetensors")
    weights = _read_cached(cached, config, dtype) if cached is not None else None
    if weights is None:
        # NOTE: fp32 for the cache file; without a cache each tensor is cast as it is made.
        weights = _dequantize(gguf, config, torch.float32 if cached is not None else dtype)
        check_weights(config, weights, file)
        if cached is not None:
            _write_cached(cached, weights)
            weights = {name: w.to(dtype) for name, w in weights.items()}
    return Checkpoint(config.to_hf(), weights, file, file, config)


def _dequantize(gguf: GGUFFile, config: ModelConfig,
                dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Weights under Hugging Face names, q/k rows back in Hugging Face order, each tensor
    dequantized to fp32 and cast to ``dtype``."""
    names: dict[str, tuple[list[str], Any]] = {}
    for tensor in config.family.tensors_of(tied=False):
        for i in config.layers_of(tensor.layers) if tensor.per_layer else (None,):
            hf = [tensor.hf.format(i=i, j=j) for j in
                  (range(config.num_experts) if tensor.per_expert else (None,))]
            names[tensor.gguf.format(i=i)] = (hf, tensor)
    weights = {}
    for info in gguf.tensors:
        if info.name not in names:
            raise CheckpointError(
                f"{gguf.path} has tensor {info.name!r}, which eventkernel does not know how "
                f"to use with this config (only {', '.join(FAMILIES)} GGUF files are supported)"
            )
        hf_names, tensor = names[info.name]
        weight = dequantize(gguf.tensor_bytes(info), info.ggml_type, info.shape)
        if tensor.gguf_row_heads is not None:
            weight = _unpermute_rows(weight, getattr(config, tensor.gguf_row_heads))
        if tensor.per_expert:               # one 3-D stack in GGUF, one tensor per expert
            if weight.dim() != 3 or weight.shape[0] != len(hf_names):
                raise CheckpointError(f"{gguf.path}: {info.name} has shape "
                                      f"{tuple(weight.shape)}, expected {len(hf_names)} experts")
            for hf_name, part in zip(hf_names, weight):
                weights[hf_name] = part.to(dtype)
        else:
            weights[hf_names[0]] = weight.to(dtype)
    return weights


def _unpermute_rows(weight: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Undo llama.cpp's q/k permutation (families whose table sets ``gguf_row_heads``).

    llama.cpp's converter turns each head's rows from the Hugging Face (rotate-half) order
    [first halves..., second halves...] into interleaved pairs (0, half, 1, half+1, ...),
    the pairing its rope kernel uses. Reading the rows back as [head, pair, 2] and swapping
    the last two row axes restores Hugging Face order.
    """
    rows = weight.shape[0]
    if rows % (2 * num_heads):
        raise CheckpointError(f"q/k projection with {rows} rows does not split into "
                              f"{num_heads} heads of even size")
    # weight: [heads * head_dim, hidden] viewed as [heads, head_dim / 2, 2, hidden]
    split = weight.reshape(num_heads, rows // num_heads // 2, 2, *weight.shape[1:])
    return split.transpose(1, 2).reshape(weight.shape).contiguous()


def _read_cached(file: pathlib.Path, config: ModelConfig,
                 dtype: torch.dtype) -> dict[str, torch.Tensor] | None:
    """The cached weights, or None (and the entry removed) when absent or unusable."""
    from safetensors import SafetensorError, safe_open

    if not file.is_file():
        return None
    try:
        with safe_open(file, framework="pt") as reader:
            if (reader.metadata() or {}).get("complete") != "1":
                raise CheckpointError("incomplete entry")
            weights = {name: reader.get_tensor(name).to(dtype) for name in reader.keys()}
        check_weights(config, weights, file)
        return weights
    except (SafetensorError, CheckpointError, OSError, ValueError, RuntimeError):
        remove(file)            # NOTE: never trusted: rebuilt from the GGUF file
        return None


def _write_cached(file: pathlib.Path, weights: dict[str, torch.Tensor]) -> None:
    try:
        write_atomically(file, lambda tmp: write_fp32_safetensors(tmp, weights,
                                                                  {"complete": "1"}))
    except OSError:
        pass                    # a read-only or full cache costs speed, not correctness


def write_fp32_safetensors(file: pathlib.Path, weights: dict[str, torch.Tensor],
                           metadata: dict[str, str]) -> None:
    """Write fp32 ``weights`` as a safetensors file, streaming each tensor's bytes.

    ``safetensors.torch.save_file`` builds the whole file in memory first (twice the time
    here). The format: an 8-byte little-endian header length, a JSON header (name ->
    dtype, shape, byte range; padded with spaces to a multiple of 8), then the bytes.
    """
    header: dict[str, Any] = {"__metadata__": metadata}
    offset = 0
    for name, weight in weights.items():
        if weight.dtype != torch.float32:
            raise ValueError(f"{name} is {weight.dtype}, not float32")
        size = weight.numel() * 4
        header[name] = {"dtype": "F32", "shape": list(weight.shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    with open(file, "wb") as f:
        f.write(len(encoded).to_bytes(8, "little"))
        f.write(encoded)
        for weight in weights.values():
            f.write(memoryview(weight.contiguous().numpy()).cast("B"))


# --- checks shared by both sources ----------------------------------------------------------


def check_weights(config: ModelConfig, weights: dict[str, torch.Tensor],
                  source: pathlib.Path) -> None:
    """Raise `CheckpointError` unless ``weights`` are exactly the tensors ``config`` needs."""
    shapes = config.checkpoint_shapes()
    missing = [name for name in shapes if name not in weights]
    if missing:
        shown = ", ".join(missing[:5]) + (f" (and {len(missing) - 5} more)"
                                          if len(missing) > 5 else "")
        raise CheckpointError(f"{source} is missing tensor(s) the config needs: {shown}")
    unexpected = sorted(set(weights) - set(shapes))
    if unexpected:
        raise CheckpointError(
            f"{source} has tensor(s) a {config.arch} model with this config does not "
            f"use: {', '.join(unexpected[:5])}; the checkpoint and its config disagree"
        )
    for name, shape in shapes.items():
        if tuple(weights[name].shape) != shape:
            raise CheckpointError(
                f"{source}: tensor {name} has shape {tuple(weights[name].shape)} but the config "
                f"(hidden_size={config.hidden_size}, head_dim={config.head_dim}, "
                f"heads={config.num_heads}/{config.num_kv_heads}, "
                f"intermediate_size={config.intermediate_size}, "
                f"vocab_size={config.vocab_size}) needs {shape}"
            )
