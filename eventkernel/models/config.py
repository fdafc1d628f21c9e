"""Model configuration read from a Hugging Face config, and compile-time limits."""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any, Mapping

from eventkernel.ir.graph import DType

SUPPORTED_ARCHITECTURES = {
    "llama": "llama", "LlamaForCausalLM": "llama",
    "qwen3": "qwen3", "Qwen3ForCausalLM": "qwen3",
}


class ModelConfigError(ValueError):
    """The model configuration is missing, malformed or unsupported."""


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """The shapes of a dense Llama-3.x / Qwen3 decoder, read from config.json."""

    arch: str                    # "llama" | "qwen3"
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

    def __post_init__(self) -> None:
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

    @property
    def qk_norm(self) -> bool:
        return self.arch == "qwen3"

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

    def layer_param_count(self) -> int:
        """Parameters of one decoder layer (projections, MLP, norms)."""
        d = self.hidden_size
        attention = d * self.qkv_size + self.q_size * d
        norms = 2 * d + (2 * self.head_dim if self.qk_norm else 0)
        return attention + 3 * d * self.intermediate_size + norms

    def kv_bytes_per_token(self, dtype_bytes: int = 2) -> int:
        """Bytes of K and V cached per token over all layers."""
        return 2 * self.num_layers * self.kv_size * dtype_bytes

    def num_parameters(self) -> int:
        d = self.hidden_size
        head = 0 if self.tie_word_embeddings else self.vocab_size * d
        return self.vocab_size * d + self.num_layers * self.layer_param_count() + d + head

    @classmethod
    def from_hf(cls, source: "str | os.PathLike | Mapping[str, Any] | Any") -> "ModelConfig":
        """From a config.json path, a model directory, a dict or a transformers config."""
        cfg = _as_dict(source)
        # NOTE: model_type decides when present; architectures only when it is missing.
        arch_names = [cfg["model_type"]] if cfg.get("model_type") else \
            list(cfg.get("architectures") or [])
        arch = next((SUPPORTED_ARCHITECTURES[a] for a in arch_names
                     if a in SUPPORTED_ARCHITECTURES), None)
        if arch is None:
            raise ModelConfigError(
                f"unsupported architecture {', '.join(arch_names) or '(none given)'}: "
                f"eventkernel supports Llama-3.x (llama) and Qwen3 dense (qwen3) models")
        try:
            hidden = int(cfg["hidden_size"])
            heads = int(cfg["num_attention_heads"])
            scaling = cfg.get("rope_scaling")
            rope_theta = cfg.get("rope_theta")
            params = cfg.get("rope_parameters")     # transformers >= 5 folds theta in here
            if isinstance(params, Mapping):
                rope_theta = rope_theta or params.get("rope_theta")
                if params.get("rope_type", "default") != "default":
                    scaling = scaling or params
            return cls(
                arch=arch, hidden_size=hidden,
                num_layers=int(cfg["num_hidden_layers"]), num_heads=heads,
                num_kv_heads=int(cfg.get("num_key_value_heads") or heads),
                head_dim=int(cfg.get("head_dim") or hidden // heads),
                intermediate_size=int(cfg["intermediate_size"]),
                vocab_size=int(cfg["vocab_size"]),
                rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
                rope_theta=float(rope_theta or 10000.0),
                rope_scaling=_freeze_scaling(scaling),
                tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
                max_position_embeddings=int(cfg.get("max_position_embeddings", 4096)))
        except KeyError as err:
            raise ModelConfigError(f"model config is missing the field {err.args[0]!r}") from None

    def to_hf(self) -> dict[str, Any]:
        """A Hugging Face config dict describing the same model (for transformers)."""
        cfg = {
            "model_type": self.arch,
            "architectures": ["LlamaForCausalLM" if self.arch == "llama" else "Qwen3ForCausalLM"],
            "hidden_size": self.hidden_size, "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads, "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim, "intermediate_size": self.intermediate_size,
            "vocab_size": self.vocab_size, "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta, "tie_word_embeddings": self.tie_word_embeddings,
            "max_position_embeddings": self.max_position_embeddings,
            "hidden_act": "silu", "attention_bias": False,
        }
        if self.rope_scaling:
            cfg["rope_scaling"] = dict(self.rope_scaling)
        return cfg


def _freeze_scaling(scaling: Any) -> tuple[tuple[str, Any], ...] | None:
    if not scaling:
        return None
    kind = scaling.get("rope_type") or scaling.get("type")
    if kind in (None, "default"):
        return None
    if kind != "llama3":
        raise ModelConfigError(
            f"rope scaling {kind!r} is not supported (supported: llama3, or none)")
    keys = ("rope_type", "factor", "low_freq_factor", "high_freq_factor",
            "original_max_position_embeddings")
    return tuple((k, scaling[k] if k != "rope_type" else "llama3") for k in keys)


def _as_dict(source: Any) -> dict[str, Any]:
    if isinstance(source, Mapping):
        return dict(source)
    if hasattr(source, "to_dict"):
        return source.to_dict()
    path = os.fspath(source)
    if os.path.isdir(path):
        path = os.path.join(path, "config.json")
    if not os.path.exists(path):
        raise ModelConfigError(f"{path}: no such file (expected a config.json or model dir)")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise ModelConfigError(f"{path}: not valid JSON ({err})") from None


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
