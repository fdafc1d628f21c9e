"""Load a checkpoint (Hugging Face directory or GGUF file) into one plain form.

Whatever the source, a `Checkpoint` holds a Hugging Face style `config` dict with a fixed
set of keys and `weights` under Hugging Face names, so the model builders in `models/`
see one format. GGUF tensors are dequantized with the `gguf` package and renamed
through one table; llama.cpp's row permutation of q/k projections is undone.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
from typing import Any

import torch

SUPPORTED_ARCHITECTURES = {"LlamaForCausalLM": "llama", "Qwen3ForCausalLM": "qwen3"}

# NOTE: defaults are those of transformers' LlamaConfig / Qwen3Config for absent keys.
_CONFIG_DEFAULTS = {
    "llama": {"rms_norm_eps": 1e-6, "rope_theta": 10000.0, "max_position_embeddings": 2048},
    "qwen3": {"rms_norm_eps": 1e-6, "rope_theta": 10000.0, "max_position_embeddings": 32768},
}

# GGUF tensor name -> Hugging Face name; `{i}` is the layer index.
GGUF_TO_HF_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
    "blk.{i}.attn_norm.weight": "model.layers.{i}.input_layernorm.weight",
    "blk.{i}.attn_q.weight": "model.layers.{i}.self_attn.q_proj.weight",
    "blk.{i}.attn_k.weight": "model.layers.{i}.self_attn.k_proj.weight",
    "blk.{i}.attn_v.weight": "model.layers.{i}.self_attn.v_proj.weight",
    "blk.{i}.attn_output.weight": "model.layers.{i}.self_attn.o_proj.weight",
    "blk.{i}.attn_q_norm.weight": "model.layers.{i}.self_attn.q_norm.weight",
    "blk.{i}.attn_k_norm.weight": "model.layers.{i}.self_attn.k_norm.weight",
    "blk.{i}.ffn_norm.weight": "model.layers.{i}.post_attention_layernorm.weight",
    "blk.{i}.ffn_gate.weight": "model.layers.{i}.mlp.gate_proj.weight",
    "blk.{i}.ffn_up.weight": "model.layers.{i}.mlp.up_proj.weight",
    "blk.{i}.ffn_down.weight": "model.layers.{i}.mlp.down_proj.weight",
}

# GGUF metadata key (after `<arch>.`) -> config key.
_GGUF_CONFIG_KEYS = {
    "embedding_length": "hidden_size",
    "block_count": "num_hidden_layers",
    "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads",
    "feed_forward_length": "intermediate_size",
    "attention.layer_norm_rms_epsilon": "rms_norm_eps",
    "rope.freq_base": "rope_theta",
    "context_length": "max_position_embeddings",
    "vocab_size": "vocab_size",
}

_LAYER_NAME = re.compile(r"^blk\.(\d+)\.(.+)$")
_IGNORED_HF_TENSORS = re.compile(r".*\.rotary_emb\.inv_freq$")


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message names the file and the problem."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint path, or a file it needs, does not exist."""


class UnsupportedArchitectureError(CheckpointError):
    """The checkpoint is a model family eventkernel does not implement."""


@dataclasses.dataclass(frozen=True, slots=True)
class Checkpoint:
    """A loaded checkpoint: Hugging Face style config, weights under Hugging Face names.

    `tokenizer_source` is the path to hand to `serve.tokenizer.load_tokenizer` (the model
    directory or the `.gguf` file), or None when the directory ships no tokenizer.
    `lm_head.weight` is absent from `weights` when `config["tie_word_embeddings"]`.
    """

    config: dict[str, Any]
    weights: dict[str, torch.Tensor]
    tokenizer_source: pathlib.Path | None
    path: pathlib.Path

    @property
    def model_type(self) -> str:
        return self.config["model_type"]


def load_checkpoint(path: str | os.PathLike, dtype: torch.dtype = torch.float32) -> Checkpoint:
    """Load a Hugging Face model directory, a `.gguf` file, or a directory holding one `.gguf`.

    Weights are returned in `dtype`. Raises `CheckpointError` (a `ValueError`) or
    `CheckpointNotFoundError` (also a `FileNotFoundError`) with a message that says what is
    wrong with which file.
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
        return _load_gguf(path, dtype)
    if (path / "config.json").is_file():
        return _load_hf_directory(path, dtype)
    ggufs = sorted(path.glob("*.gguf"))
    if len(ggufs) == 1:
        return _load_gguf(ggufs[0], dtype)
    if len(ggufs) > 1:
        names = ", ".join(p.name for p in ggufs)
        raise CheckpointError(f"{path} holds several .gguf files ({names}); pass one of them")
    raise CheckpointNotFoundError(
        f"{path} has no config.json and no .gguf file; pass a Hugging Face model directory "
        "(config.json + *.safetensors) or a .gguf file"
    )


# --- Hugging Face directories ------------------------------------------------------------


def _load_hf_directory(directory: pathlib.Path, dtype: torch.dtype) -> Checkpoint:
    from safetensors import safe_open

    config_file = directory / "config.json"
    try:
        raw = json.loads(config_file.read_text())
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{config_file} is not valid JSON: {error}") from None
    config = _config_from_hf(raw, config_file)

    files = _safetensors_files(directory)
    weights = {}
    for file in files:
        with safe_open(file, framework="pt") as reader:
            for name in reader.keys():
                if _IGNORED_HF_TENSORS.match(name):
                    continue
                weights[name] = reader.get_tensor(name).to(dtype)
    if config["tie_word_embeddings"]:
        weights.pop("lm_head.weight", None)
    _check_weights(config, weights, directory)
    has_tokenizer = any(
        (directory / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")
    )
    return Checkpoint(config, weights, directory if has_tokenizer else None, directory)


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


def _config_from_hf(raw: dict[str, Any], source: pathlib.Path) -> dict[str, Any]:
    architectures = raw.get("architectures") or []
    model_type = raw.get("model_type")
    for architecture in architectures:
        if architecture not in SUPPORTED_ARCHITECTURES:
            raise _unsupported(f"architecture {architecture!r}", source)
    if model_type not in SUPPORTED_ARCHITECTURES.values():
        raise _unsupported(f"model_type {model_type!r}", source)
    if raw.get("attention_bias") or raw.get("mlp_bias"):
        raise _unsupported("attention_bias/mlp_bias = true", source)
    if raw.get("hidden_act", "silu") != "silu":
        raise _unsupported(f"hidden_act {raw['hidden_act']!r} (only 'silu')", source)
    if raw.get("use_sliding_window"):
        raise _unsupported("use_sliding_window = true", source)

    required = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                "vocab_size")
    missing = [key for key in required if raw.get(key) is None]
    if missing:
        raise CheckpointError(f"{source} lacks required key(s): {', '.join(missing)}")

    # NOTE: transformers >= 5 writes `rope_parameters` (theta + scaling); older files
    # write `rope_theta` and `rope_scaling`.
    rope = dict(raw.get("rope_parameters") or raw.get("rope_scaling") or {})
    nested_theta = rope.pop("rope_theta", None)
    rope_theta = raw.get("rope_theta", nested_theta)
    if "type" in rope:
        rope.setdefault("rope_type", rope.pop("type"))
    rope_scaling = rope if rope.get("rope_type", "default") != "default" else None

    defaults = _CONFIG_DEFAULTS[model_type]
    num_heads = raw["num_attention_heads"]
    return {
        "model_type": model_type,
        "hidden_size": raw["hidden_size"],
        "num_hidden_layers": raw["num_hidden_layers"],
        "num_attention_heads": num_heads,
        "num_key_value_heads": raw.get("num_key_value_heads") or num_heads,
        "head_dim": raw.get("head_dim") or raw["hidden_size"] // num_heads,
        "intermediate_size": raw["intermediate_size"],
        "vocab_size": raw["vocab_size"],
        "rms_norm_eps": raw.get("rms_norm_eps", defaults["rms_norm_eps"]),
        "rope_theta": float(rope_theta if rope_theta is not None else defaults["rope_theta"]),
        "rope_scaling": rope_scaling,
        "tie_word_embeddings": bool(raw.get("tie_word_embeddings", False)),
        "max_position_embeddings": raw.get(
            "max_position_embeddings", defaults["max_position_embeddings"]
        ),
        "bos_token_id": raw.get("bos_token_id"),
        "eos_token_id": raw.get("eos_token_id"),
    }


def _unsupported(what: str, source: pathlib.Path) -> UnsupportedArchitectureError:
    supported = ", ".join(f"{a} / {t}" for a, t in SUPPORTED_ARCHITECTURES.items())
    return UnsupportedArchitectureError(
        f"{source}: unsupported {what}; eventkernel supports {supported}"
    )


# --- GGUF files ----------------------------------------------------------------------------


def _load_gguf(file: pathlib.Path, dtype: torch.dtype) -> Checkpoint:
    import gguf
    import numpy as np

    try:
        reader = gguf.GGUFReader(file)
    except (ValueError, OSError) as error:
        raise CheckpointError(f"{file} is not a readable GGUF file: {error}") from None
    names = {tensor.name for tensor in reader.tensors}
    config = _config_from_gguf(reader, names, file)

    weights = {}
    for tensor in reader.tensors:
        hf_name = _hf_name(tensor.name, file)
        array = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        if not array.flags.writeable:
            array = array.copy()
        weight = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        if config["model_type"] == "llama" and hf_name.endswith(("q_proj.weight", "k_proj.weight")):
            num_heads = config["num_attention_heads" if "q_proj" in hf_name else
                               "num_key_value_heads"]
            weight = _unpermute_rows(weight, num_heads)
        weights[hf_name] = weight.to(dtype)
    _check_weights(config, weights, file)
    return Checkpoint(config, weights, file, file)


def _unpermute_rows(weight: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Undo llama.cpp's q/k permutation for the llama architecture.

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
    return split.transpose(1, 2).reshape(weight.shape)


def _hf_name(gguf_name: str, file: pathlib.Path) -> str:
    match = _LAYER_NAME.match(gguf_name)
    if match is None:
        hf_name = GGUF_TO_HF_NAMES.get(gguf_name)
    else:
        template = GGUF_TO_HF_NAMES.get("blk.{i}." + match.group(2))
        hf_name = template.format(i=match.group(1)) if template else None
    if hf_name is None:
        raise CheckpointError(
            f"{file} has tensor {gguf_name!r}, which eventkernel does not know how to use; "
            "only dense llama / qwen3 GGUF files are supported"
        )
    return hf_name


def _config_from_gguf(reader, tensor_names: set[str], file: pathlib.Path) -> dict[str, Any]:
    def field(key: str, default: Any = None) -> Any:
        entry = reader.fields.get(key)
        return default if entry is None else entry.contents()

    arch = field("general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES.values():
        raise _unsupported(f"GGUF general.architecture {arch!r}", file)
    if "rope_freqs.weight" in tensor_names:
        raise _unsupported("per-frequency rope scaling (tensor rope_freqs, Llama 3 style); "
                           "load the Hugging Face directory instead", file)

    config: dict[str, Any] = {"model_type": arch}
    for gguf_key, config_key in _GGUF_CONFIG_KEYS.items():
        config[config_key] = field(f"{arch}.{gguf_key}")
    if config["vocab_size"] is None and "tokenizer.ggml.tokens" in reader.fields:
        config["vocab_size"] = len(reader.fields["tokenizer.ggml.tokens"].data)
    missing = [key for key, value in config.items() if value is None
               and key not in ("num_key_value_heads", "rms_norm_eps", "rope_theta",
                               "max_position_embeddings")]
    if missing:
        raise CheckpointError(f"{file} lacks GGUF metadata for: {', '.join(missing)}")

    defaults = _CONFIG_DEFAULTS[arch]
    for key in ("rms_norm_eps", "rope_theta", "max_position_embeddings"):
        if config[key] is None:
            config[key] = defaults[key]
    config["rope_theta"] = float(config["rope_theta"])
    num_heads = config["num_attention_heads"]
    config["num_key_value_heads"] = config["num_key_value_heads"] or num_heads
    config["head_dim"] = field(f"{arch}.attention.key_length") or field(
        f"{arch}.rope.dimension_count") or config["hidden_size"] // num_heads
    config["rope_scaling"] = _gguf_rope_scaling(field, arch)
    config["tie_word_embeddings"] = "output.weight" not in tensor_names
    config["bos_token_id"] = field("tokenizer.ggml.bos_token_id")
    config["eos_token_id"] = field("tokenizer.ggml.eos_token_id")
    return config


def _gguf_rope_scaling(field, arch: str) -> dict[str, Any] | None:
    kind = field(f"{arch}.rope.scaling.type", "none")
    if kind == "none":
        return None
    scaling: dict[str, Any] = {"rope_type": kind, "factor": field(f"{arch}.rope.scaling.factor")}
    original = field(f"{arch}.rope.scaling.original_context_length")
    if original is not None:
        scaling["original_max_position_embeddings"] = original
    return scaling


# --- checks shared by both sources ----------------------------------------------------------


def expected_shapes(config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Every weight name the config needs, with its shape."""
    hidden, heads_dim = config["hidden_size"], config["head_dim"]
    q_rows = config["num_attention_heads"] * heads_dim
    kv_rows = config["num_key_value_heads"] * heads_dim
    ffn, vocab = config["intermediate_size"], config["vocab_size"]
    per_layer = {
        "input_layernorm.weight": (hidden,),
        "self_attn.q_proj.weight": (q_rows, hidden),
        "self_attn.k_proj.weight": (kv_rows, hidden),
        "self_attn.v_proj.weight": (kv_rows, hidden),
        "self_attn.o_proj.weight": (hidden, q_rows),
        "post_attention_layernorm.weight": (hidden,),
        "mlp.gate_proj.weight": (ffn, hidden),
        "mlp.up_proj.weight": (ffn, hidden),
        "mlp.down_proj.weight": (hidden, ffn),
    }
    if config["model_type"] == "qwen3":
        per_layer["self_attn.q_norm.weight"] = (heads_dim,)
        per_layer["self_attn.k_norm.weight"] = (heads_dim,)
    shapes = {"model.embed_tokens.weight": (vocab, hidden), "model.norm.weight": (hidden,)}
    for layer in range(config["num_hidden_layers"]):
        for suffix, shape in per_layer.items():
            shapes[f"model.layers.{layer}.{suffix}"] = shape
    if not config["tie_word_embeddings"]:
        shapes["lm_head.weight"] = (vocab, hidden)
    return shapes


def _check_weights(config: dict[str, Any], weights: dict[str, torch.Tensor],
                   source: pathlib.Path) -> None:
    shapes = expected_shapes(config)
    missing = [name for name in shapes if name not in weights]
    if missing:
        shown = ", ".join(missing[:5]) + (f" (and {len(missing) - 5} more)"
                                          if len(missing) > 5 else "")
        raise CheckpointError(f"{source} is missing tensor(s) the config needs: {shown}")
    unexpected = sorted(set(weights) - set(shapes))
    if unexpected:
        raise CheckpointError(
            f"{source} has tensor(s) a {config['model_type']} model with this config does not "
            f"use: {', '.join(unexpected[:5])}; the checkpoint and its config disagree"
        )
    for name, shape in shapes.items():
        if tuple(weights[name].shape) != shape:
            raise CheckpointError(
                f"{source}: tensor {name} has shape {tuple(weights[name].shape)} but the config "
                f"(hidden_size={config['hidden_size']}, head_dim={config['head_dim']}, "
                f"heads={config['num_attention_heads']}/{config['num_key_value_heads']}, "
                f"intermediate_size={config['intermediate_size']}, "
                f"vocab_size={config['vocab_size']}) needs {shape}"
            )
