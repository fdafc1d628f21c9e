"""Model configuration: the one parser of Hugging Face configs and GGUF metadata, and limits.

``ModelConfig.from_hf`` reads a config.json (a path, a model directory, a dict or a
transformers config) and ``ModelConfig.from_gguf`` a GGUF file's metadata; both end in
:func:`parse_config`, which takes each absent key's default from the model's family
(``models/llama.py``, ``models/qwen3.py``).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any, Collection, Mapping

from eventkernel.ir.graph import DType
from eventkernel.models.errors import ModelConfigError, UnsupportedArchitectureError
from eventkernel.models.families import FAMILIES, find_family, find_gguf_family
from eventkernel.models.family import CheckpointTensor, Family

_REQUIRED = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
             "vocab_size")

# GGUF metadata key (after ``<architecture>.``) -> Hugging Face config key.
GGUF_CONFIG_KEYS = {
    "embedding_length": "hidden_size",
    "block_count": "num_hidden_layers",
    "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads",
    "attention.key_length": "head_dim",
    "feed_forward_length": "intermediate_size",
    "attention.layer_norm_rms_epsilon": "rms_norm_eps",
    "rope.freq_base": "rope_theta",
    "context_length": "max_position_embeddings",
    "vocab_size": "vocab_size",
}
_GGUF_TOKEN_IDS = {"tokenizer.ggml.bos_token_id": "bos_token_id",
                   "tokenizer.ggml.eos_token_id": "eos_token_id"}


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """The shapes of a dense decoder of one family (``arch`` = its Hugging Face model_type)."""

    arch: str                    # a key of models.families.FAMILIES: "llama" | "qwen3"
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: tuple[tuple[str, Any], ...] | None
    tie_word_embeddings: bool
    max_position_embeddings: int
    bos_token_id: int | None = None
    eos_token_id: int | tuple[int, ...] | None = None
    # Sparse MoE MLPs (qwen3_moe): 0 experts means every layer's MLP is dense.
    num_experts: int = 0
    experts_per_token: int = 0
    moe_intermediate_size: int = 0
    norm_topk_prob: bool = False
    decoder_sparse_step: int = 1
    mlp_only_layers: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.arch not in FAMILIES:
            raise UnsupportedArchitectureError(
                f"unknown model family {self.arch!r}; known: {', '.join(FAMILIES)}")
        for name in ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim",
                     "intermediate_size", "vocab_size"):
            if getattr(self, name) <= 0:
                raise ModelConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.num_heads % self.num_kv_heads:
            raise ModelConfigError(
                f"num_attention_heads ({self.num_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_kv_heads})")
        if self.head_dim % 2:
            raise ModelConfigError(f"head_dim must be even for RoPE, got {self.head_dim}")
        if self.family.moe:
            if not 1 <= self.experts_per_token <= self.num_experts:
                raise ModelConfigError(
                    f"num_experts_per_tok ({self.experts_per_token}) must be in [1, "
                    f"num_experts ({self.num_experts})]")
            if self.moe_intermediate_size <= 0 or self.decoder_sparse_step <= 0:
                raise ModelConfigError(
                    f"moe_intermediate_size ({self.moe_intermediate_size}) and "
                    f"decoder_sparse_step ({self.decoder_sparse_step}) must be positive")

    def is_moe_layer(self, layer: int) -> bool:
        """Is layer ``layer``'s MLP the sparse MoE block (transformers' rule)?"""
        return (self.num_experts > 0 and layer not in self.mlp_only_layers
                and (layer + 1) % self.decoder_sparse_step == 0)

    def layers_of(self, kind: str) -> range | list[int]:
        """The layers a per-layer checkpoint tensor of ``kind`` exists in: "all", "dense"
        (a dense MLP) or "moe" (the sparse MoE block)."""
        if kind == "all":
            return range(self.num_layers)
        moe = kind == "moe"
        return [i for i in range(self.num_layers) if self.is_moe_layer(i) == moe]

    def checkpoint_names(self, tensor: "CheckpointTensor") -> list[tuple[str, str]]:
        """``(graph weight, Hugging Face name)`` of every instance of ``tensor``: one per
        layer it exists in (``{i}``) and per expert (``{j}``), experts innermost."""
        layers = self.layers_of(tensor.layers) if tensor.per_layer else (None,)
        experts = range(self.num_experts) if tensor.per_expert else (None,)
        return [(tensor.graph.format(i=i), tensor.hf.format(i=i, j=j))
                for i in layers for j in experts]
    @property
    def family(self) -> Family:
        return FAMILIES[self.arch]

    @property
    def qk_norm(self) -> bool:
        return self.family.qk_norm

    @property
    def group_size(self) -> int:
        return self.num_heads // self.num_kv_heads

    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def qkv_size(self) -> int:
        return self.q_size + 2 * self.kv_size

    @property
    def model_type(self) -> str:
        return self.arch

    def checkpoint_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every Hugging Face tensor name a checkpoint of this config has, with its shape."""
        shapes = {}
        for tensor in self.family.tensors_of(self.tie_word_embeddings):
            shape = tuple(getattr(self, dim) for dim in tensor.shape)
            for _, hf in self.checkpoint_names(tensor):
                shapes[hf] = shape
        return shapes

    def layer_param_count(self) -> int:
        """Parameters of one decoder layer (projections, MLP, norms; every expert)."""
        per_layer = [s for name, s in self.checkpoint_shapes().items()
                     if name.startswith("model.layers.0.")]
        return sum(math.prod(shape) for shape in per_layer)

    def active_layer_param_count(self, layer: int = 0) -> int:
        """Parameters one token reads in layer ``layer``: of an MoE layer, the router and
        ``experts_per_token`` of its experts."""
        prefix = f"model.layers.{layer}."
        total = 0
        for name, shape in self.checkpoint_shapes().items():
            if not name.startswith(prefix):
                continue
            scale = self.experts_per_token / self.num_experts if ".experts." in name else 1
            total += math.prod(shape) * scale
        return int(total)

    def kv_bytes_per_token(self, dtype_bytes: int = 2) -> int:
        """Bytes of K and V cached per token over all layers."""
        return 2 * self.num_layers * self.kv_size * dtype_bytes

    def num_parameters(self) -> int:
        return sum(math.prod(shape) for shape in self.checkpoint_shapes().values())

    @classmethod
    def from_hf(cls, source: "str | os.PathLike | Mapping[str, Any] | Any") -> "ModelConfig":
        """From a config.json path, a model directory, a dict or a transformers config."""
        raw, name = _as_dict(source)
        return parse_config(raw, name)

    @classmethod
    def from_gguf(cls, metadata: Mapping[str, Any], tensor_names: Collection[str],
                  source: str = "GGUF file") -> "ModelConfig":
        """From a GGUF file's metadata (key -> value; arrays may be given as their length)."""
        return parse_config(gguf_to_hf(metadata, tensor_names, source), source)

    def to_hf(self) -> dict[str, Any]:
        """A Hugging Face config dict describing the same model (for transformers)."""
        cfg = {
            "model_type": self.arch,
            "architectures": [self.family.architectures[0]],
            "hidden_size": self.hidden_size, "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads, "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim, "intermediate_size": self.intermediate_size,
            "vocab_size": self.vocab_size, "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta, "tie_word_embeddings": self.tie_word_embeddings,
            "max_position_embeddings": self.max_position_embeddings,
            "hidden_act": "silu", "attention_bias": False,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": (list(self.eos_token_id) if isinstance(self.eos_token_id, tuple)
                             else self.eos_token_id),
        }
        if self.rope_scaling:
            cfg["rope_scaling"] = dict(self.rope_scaling)
        if self.family.moe:
            cfg |= {"num_experts": self.num_experts,
                    "num_experts_per_tok": self.experts_per_token,
                    "moe_intermediate_size": self.moe_intermediate_size,
                    "norm_topk_prob": self.norm_topk_prob,
                    "decoder_sparse_step": self.decoder_sparse_step,
                    "mlp_only_layers": list(self.mlp_only_layers)}
        return cfg


def parse_config(raw: Mapping[str, Any], source: str = "model config") -> ModelConfig:
    """The one parser: a Hugging Face config dict -> :class:`ModelConfig`.

    Absent keys take the family's defaults (those of transformers' config class); features
    eventkernel does not implement (biases, other activations, sliding windows, rope
    scalings other than llama3) are refused with a message naming ``source``.
    """
    family = find_family(raw.get("model_type"), raw.get("architectures") or [], source)
    if raw.get("attention_bias") or raw.get("mlp_bias"):
        raise UnsupportedArchitectureError(f"{source}: attention_bias/mlp_bias = true is not "
                                           "supported (eventkernel's decoders have no biases)")
    if raw.get("hidden_act", "silu") != "silu":
        raise UnsupportedArchitectureError(
            f"{source}: hidden_act {raw['hidden_act']!r} is not supported (only 'silu')")
    if raw.get("use_sliding_window"):
        raise UnsupportedArchitectureError(f"{source}: use_sliding_window = true is not "
                                           "supported")
    missing = [key for key in _REQUIRED if raw.get(key) is None and key not in family.defaults]
    if missing:
        raise ModelConfigError(f"{source} lacks required key(s): {', '.join(missing)}")

    def get(key: str) -> Any:
        return raw[key] if key in raw else family.defaults[key]

    hidden, heads = int(raw["hidden_size"]), int(raw["num_attention_heads"])
    # NOTE: transformers >= 5 writes `rope_parameters` (theta + scaling); older files
    # write `rope_theta` and `rope_scaling`.
    params = raw.get("rope_parameters")
    params = dict(params) if isinstance(params, Mapping) else {}
    rope_theta = raw.get("rope_theta") or params.get("rope_theta") or \
        family.defaults["rope_theta"]
    scaling = raw.get("rope_scaling") or (params if params.get("rope_type", "default")
                                          != "default" else None)
    eos = get("eos_token_id")
    try:
        return ModelConfig(
            arch=family.model_type, hidden_size=hidden,
            num_layers=int(raw["num_hidden_layers"]), num_heads=heads,
            num_kv_heads=int(get("num_key_value_heads") or heads),
            head_dim=int(get("head_dim") or hidden // heads),
            intermediate_size=int(get("intermediate_size")),
            vocab_size=int(raw["vocab_size"]),
            rms_norm_eps=float(get("rms_norm_eps")),
            rope_theta=float(rope_theta),
            rope_scaling=_freeze_scaling(scaling, source),
            tie_word_embeddings=bool(get("tie_word_embeddings")),
            max_position_embeddings=int(get("max_position_embeddings")),
            bos_token_id=get("bos_token_id"),
            eos_token_id=tuple(eos) if isinstance(eos, (list, tuple)) else eos,
            **(_moe_fields(raw, get) if family.moe else {}))
    except ModelConfigError as error:
        raise type(error)(f"{source}: {error}") from None
    except (TypeError, ValueError) as error:
        raise ModelConfigError(f"{source} has a malformed value: {error}") from None


def _moe_fields(raw: Mapping[str, Any], get) -> dict[str, Any]:
    """The sparse-MoE keys of a config (transformers >= 5 writes ``num_local_experts`` for
    ``num_experts``)."""
    experts = raw.get("num_experts", raw.get("num_local_experts"))
    return {"num_experts": int(get("num_experts") if experts is None else experts),
            "experts_per_token": int(get("num_experts_per_tok")),
            "moe_intermediate_size": int(get("moe_intermediate_size")),
            "norm_topk_prob": bool(get("norm_topk_prob")),
            "decoder_sparse_step": int(get("decoder_sparse_step")),
            "mlp_only_layers": tuple(int(i) for i in (get("mlp_only_layers") or ()))}


def gguf_to_hf(metadata: Mapping[str, Any], tensor_names: Collection[str],
               source: str = "GGUF file") -> dict[str, Any]:
    """A Hugging Face config dict from GGUF metadata, with llama.cpp's fallbacks."""
    family = find_gguf_family(metadata.get("general.architecture"), source)
    if "rope_freqs.weight" in tensor_names:
        raise UnsupportedArchitectureError(
            f"{source}: per-frequency rope scaling (tensor rope_freqs, Llama 3 style) is not "
            "supported in GGUF files; load the Hugging Face directory instead")
    prefix = family.gguf_architecture + "."
    raw: dict[str, Any] = {"model_type": family.model_type,
                           "architectures": [family.architectures[0]]}
    keys = {**GGUF_CONFIG_KEYS, **family.gguf_config_keys}
    for key, hf_key in {**{prefix + k: v for k, v in keys.items()},
                        **_GGUF_TOKEN_IDS}.items():
        if metadata.get(key) is not None:
            raw[hf_key] = metadata[key]
    if "vocab_size" not in raw and "tokenizer.ggml.tokens" in metadata:
        tokens = metadata["tokenizer.ggml.tokens"]
        raw["vocab_size"] = tokens if isinstance(tokens, int) else len(tokens)
    missing = [prefix + k for k, v in GGUF_CONFIG_KEYS.items()
               if v in _REQUIRED and v not in raw and v != "vocab_size"]
    if "vocab_size" not in raw:
        missing.append(prefix + "vocab_size (or tokenizer.ggml.tokens)")
    if missing:
        raise ModelConfigError(f"{source} lacks GGUF metadata for: {', '.join(missing)}")
    # NOTE: llama.cpp's fallbacks, not transformers' (Qwen3's config defaults differ).
    heads = raw["num_attention_heads"]
    raw.setdefault("num_key_value_heads", heads)
    raw.setdefault("head_dim", metadata.get(prefix + "rope.dimension_count")
                   or raw["hidden_size"] // heads)
    raw["tie_word_embeddings"] = "output.weight" not in tensor_names
    raw.update(family.gguf_fixed)
    kind = metadata.get(prefix + "rope.scaling.type", "none")
    if kind != "none":
        raw["rope_scaling"] = {"rope_type": kind,
                               "factor": metadata.get(prefix + "rope.scaling.factor")}
    return raw


def _freeze_scaling(scaling: Any, source: str) -> tuple[tuple[str, Any], ...] | None:
    if not scaling:
        return None
    kind = scaling.get("rope_type") or scaling.get("type")
    if kind in (None, "default"):
        return None
    if kind != "llama3":
        raise UnsupportedArchitectureError(
            f"{source}: rope scaling {kind!r} is not supported (supported: llama3, or none)")
    keys = ("rope_type", "factor", "low_freq_factor", "high_freq_factor",
            "original_max_position_embeddings")
    missing = [k for k in keys[1:] if k not in scaling]
    if missing:
        raise ModelConfigError(f"{source}: llama3 rope scaling lacks {', '.join(missing)}")
    return tuple((k, scaling[k] if k != "rope_type" else "llama3") for k in keys)


def _as_dict(source: Any) -> tuple[dict[str, Any], str]:
    if isinstance(source, Mapping):
        return dict(source), "model config"
    if hasattr(source, "to_dict"):
        return source.to_dict(), "transformers config"
    path = os.fspath(source)
    if os.path.isdir(path):
        path = os.path.join(path, "config.json")
    if not os.path.exists(path):
        raise ModelConfigError(f"{path}: no such file (expected a config.json or model dir)")
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except json.JSONDecodeError as err:
        raise ModelConfigError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(raw, dict):
        raise ModelConfigError(f"{path} is not a JSON object")
    return raw, path


@dataclass(frozen=True, slots=True)
class Limits:
    """Compile-time maxima of a program: every step must fit inside them."""

    max_tokens: int = 64          # tokens per step (decode tokens + prefill chunk)
    max_seqs: int = 16            # sequences per step
    max_context: int = 4096       # tokens of context per sequence
    page_size: int = 16           # tokens per KV-cache page
    num_pages: int = 0            # 0: enough for max_seqs sequences of max_context
    dtype: DType = DType.BF16     # weights and activations

    def __post_init__(self) -> None:
        for name in ("max_tokens", "max_seqs", "max_context", "page_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.max_seqs > self.max_tokens:
            raise ValueError(f"max_seqs ({self.max_seqs}) cannot exceed max_tokens "
                             f"({self.max_tokens}): every sequence brings a token per step")
        if self.num_pages < 0:
            raise ValueError(f"num_pages must be >= 0, got {self.num_pages}")

    @property
    def pages_per_seq(self) -> int:
        return math.ceil(self.max_context / self.page_size)

    @property
    def total_pages(self) -> int:
        return self.num_pages or self.max_seqs * self.pages_per_seq
