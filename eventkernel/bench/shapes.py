"""The numbers a benchmark needs from a Hugging Face config, read once and validated.

``ModelShape.from_config`` accepts a ``config.json`` dict (for instance from
``models.presets.preset_config``) or a ``transformers`` config object, and refuses model families the
benchmarks do not model, instead of guessing.
"""

from __future__ import annotations

import dataclasses
from typing import Any

SUPPORTED_MODEL_TYPES = ("llama", "qwen3")


@dataclasses.dataclass(frozen=True, slots=True)
class ModelShape:
    """Shapes of a dense decoder-only transformer (Llama or Qwen3 family)."""

    model_type: str
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: dict | None  # llama3 scaling parameters, or None for plain RoPE
    qk_norm: bool  # Qwen3: RMSNorm over head_dim on q and k before RoPE

    def __post_init__(self) -> None:
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_attention_heads ({self.num_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_kv_heads})"
            )
        if self.head_dim % 2:
            raise ValueError(f"head_dim must be even for RoPE, got {self.head_dim}")

    @classmethod
    def from_config(cls, config: Any) -> ModelShape:
        """Read a HF config dict or ``PretrainedConfig``; raise ``ValueError`` if unsupported."""
        cfg = config if isinstance(config, dict) else config.to_dict()
        model_type = cfg.get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(
                f"benchmarks support model_type in {SUPPORTED_MODEL_TYPES}, got {model_type!r}"
            )
        hidden = int(cfg["hidden_size"])
        heads = int(cfg["num_attention_heads"])
        rope_theta, rope_scaling = _rope_parameters(cfg)
        return cls(
            model_type=model_type,
            hidden_size=hidden,
            num_layers=int(cfg["num_hidden_layers"]),
            num_heads=heads,
            num_kv_heads=int(cfg.get("num_key_value_heads") or heads),
            head_dim=int(cfg.get("head_dim") or hidden // heads),
            intermediate_size=int(cfg["intermediate_size"]),
            vocab_size=int(cfg["vocab_size"]),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            rope_theta=rope_theta,
            rope_scaling=rope_scaling,
            qk_norm=model_type == "qwen3",
        )

    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim

    def layer_param_count(self) -> int:
        """Parameters of one decoder layer (projections, MLP, norms)."""
        qkv = self.hidden_size * (self.q_size + 2 * self.kv_size)
        attention = qkv + self.q_size * self.hidden_size
        mlp = 3 * self.hidden_size * self.intermediate_size
        norms = 2 * self.hidden_size + (2 * self.head_dim if self.qk_norm else 0)
        return attention + mlp + norms

    def kv_bytes_per_token(self, dtype_bytes: int = 2) -> int:
        """Bytes of K and V cached per token over all layers."""
        return 2 * self.num_layers * self.kv_size * dtype_bytes


def _rope_parameters(cfg: dict) -> tuple[float, dict | None]:
    """Return (theta, llama3 scaling or None) from old (rope_scaling) or new (rope_parameters)."""
    params = cfg.get("rope_parameters") or {}
    scaling = cfg.get("rope_scaling") or params
    theta = cfg.get("rope_theta", params.get("rope_theta", 10000.0))
    rope_type = (scaling or {}).get("rope_type", (scaling or {}).get("type", "default"))
    if rope_type == "default":
        return float(theta), None
    if rope_type != "llama3":
        raise ValueError(f"benchmarks support RoPE types 'default' and 'llama3', got {rope_type!r}")
    keys = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
    return float(theta), {key: scaling[key] for key in keys}
