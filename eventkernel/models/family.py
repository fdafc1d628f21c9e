"""What a model family is: its config defaults, the features it turns on, its checkpoint names.

A family file (``llama.py``, ``qwen3.py``) declares one :class:`Family`; ``families.py`` lists
them by ``model_type``. Everything that differs between families is a field here, so the
config parser, the checkpoint loader and the graph builder never test a family's name.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping


@dataclass(frozen=True, slots=True)
class CheckpointTensor:
    """One checkpoint tensor and the graph weight it belongs to.

    ``graph``: the graph weight; tensors naming the same one are concatenated along dim 0 in
    table order (q, k, v -> ``qkv``). ``hf`` / ``gguf``: its Hugging Face safetensors and
    llama.cpp GGUF names; ``{i}`` is the layer index. ``shape``: the ModelConfig attributes
    giving each dim. ``gguf_row_heads``: llama.cpp's converter interleaved the rows of each of
    this many heads (a ModelConfig attribute); loading undoes it. ``untied_only``: present
    only when the embedding is not tied to the output head. ``layers``: the layers a
    per-layer tensor exists in, "all", "dense" (layers with a dense MLP) or "moe" (layers
    with the sparse MoE block).

    Per-expert tensors carry the expert index ``{j}`` in their Hugging Face name only: the
    graph weight stacks the experts ([experts, *shape], expert-major, each expert's parts
    concatenated in table order) and GGUF stores the same stack as one 3-D tensor.
    """

    graph: str
    hf: str
    gguf: str
    shape: tuple[str, ...]
    gguf_row_heads: str | None = None
    untied_only: bool = False
    layers: str = "all"

    def __post_init__(self) -> None:
        per_layer = {"{i}" in name for name in (self.graph, self.hf, self.gguf)}
        if len(per_layer) != 1:
            raise ValueError(f"{self.hf}: graph, Hugging Face and GGUF names must all or "
                             "none carry the layer index {i}")
        if "{j}" in self.graph or "{j}" in self.gguf:
            raise ValueError(f"{self.hf}: only the Hugging Face name carries the expert "
                             "index {j} (graph and GGUF weights stack the experts)")
        if self.layers not in ("all", "dense", "moe"):
            raise ValueError(f"{self.hf}: layers must be 'all', 'dense' or 'moe'")

    @property
    def per_layer(self) -> bool:
        return "{i}" in self.hf

    @property
    def per_expert(self) -> bool:
        return "{j}" in self.hf


@dataclass(frozen=True, slots=True)
class Family:
    """A model family (one Hugging Face ``model_type``).

    ``defaults``: the value transformers' config class takes for each key a config.json may
    leave out. ``qk_norm``: RMSNorm on each head's q and k before RoPE. ``tensors``: every
    checkpoint tensor of the family, one table for Hugging Face and GGUF names and shapes.
    ``moe``: layers may carry the sparse MoE block (config keys ``num_experts`` ...).
    ``gguf_config_keys``: GGUF metadata keys (after ``<architecture>.``) of this family
    beyond the common ones, to Hugging Face keys; ``gguf_fixed``: config values a GGUF file
    of this family implies (llama.cpp's fixed behaviour).
    """

    model_type: str
    architectures: tuple[str, ...]        # Hugging Face class names (config "architectures")
    gguf_architecture: str                # GGUF general.architecture
    defaults: Mapping[str, Any]
    qk_norm: bool
    tensors: tuple[CheckpointTensor, ...]
    moe: bool = False
    gguf_config_keys: Mapping[str, str] = field(default_factory=dict)
    gguf_fixed: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("defaults", "gguf_config_keys", "gguf_fixed"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))
        for attr in ("hf", "gguf"):
            names = [(getattr(t, attr), t.layers) for t in self.tensors]
            if len(set(names)) != len(names):
                raise ValueError(f"{self.model_type}: a {attr} name is listed twice")

    def tensors_of(self, tied: bool) -> tuple[CheckpointTensor, ...]:
        """The tensors a checkpoint has (the output head only when not ``tied``)."""
        return tuple(t for t in self.tensors if not (tied and t.untied_only))


def dense_decoder_tensors(*, gguf_interleaves_qk: bool, qk_norm: bool,
                          mlp_layers: str = "all") -> tuple[CheckpointTensor, ...]:
    """The checkpoint table of the Llama-style dense decoder, which Llama and Qwen3 share
    name for name: ``gguf_interleaves_qk`` (llama.cpp reordered q and k rows per head) and
    ``qk_norm`` (an RMSNorm weight on each head's q and k) are where they differ.
    ``mlp_layers``: the layers with the dense MLP ("dense" in an MoE family)."""
    T, layer = CheckpointTensor, "model.layers.{i}."
    q_heads, kv_heads = ("num_heads", "num_kv_heads") if gguf_interleaves_qk else (None, None)
    norms = (
        T("layers.{i}.q_norm", layer + "self_attn.q_norm.weight", "blk.{i}.attn_q_norm.weight",
          ("head_dim",)),
        T("layers.{i}.k_norm", layer + "self_attn.k_norm.weight", "blk.{i}.attn_k_norm.weight",
          ("head_dim",)),
    ) if qk_norm else ()
    return (
        # graph weight        Hugging Face name                          GGUF name
        T("embed", "model.embed_tokens.weight", "token_embd.weight",
          ("vocab_size", "hidden_size")),
        T("final_norm", "model.norm.weight", "output_norm.weight", ("hidden_size",)),
        T("lm_head", "lm_head.weight", "output.weight", ("vocab_size", "hidden_size"),
          untied_only=True),
        T("layers.{i}.attn_norm", layer + "input_layernorm.weight", "blk.{i}.attn_norm.weight",
          ("hidden_size",)),
        T("layers.{i}.qkv", layer + "self_attn.q_proj.weight", "blk.{i}.attn_q.weight",
          ("q_size", "hidden_size"), gguf_row_heads=q_heads),
        T("layers.{i}.qkv", layer + "self_attn.k_proj.weight", "blk.{i}.attn_k.weight",
          ("kv_size", "hidden_size"), gguf_row_heads=kv_heads),
        T("layers.{i}.qkv", layer + "self_attn.v_proj.weight", "blk.{i}.attn_v.weight",
          ("kv_size", "hidden_size")),
        *norms,
        T("layers.{i}.o_proj", layer + "self_attn.o_proj.weight", "blk.{i}.attn_output.weight",
          ("hidden_size", "q_size")),
        T("layers.{i}.mlp_norm", layer + "post_attention_layernorm.weight",
          "blk.{i}.ffn_norm.weight", ("hidden_size",)),
        T("layers.{i}.gate_up", layer + "mlp.gate_proj.weight", "blk.{i}.ffn_gate.weight",
          ("intermediate_size", "hidden_size"), layers=mlp_layers),
        T("layers.{i}.gate_up", layer + "mlp.up_proj.weight", "blk.{i}.ffn_up.weight",
          ("intermediate_size", "hidden_size"), layers=mlp_layers),
        T("layers.{i}.down", layer + "mlp.down_proj.weight", "blk.{i}.ffn_down.weight",
          ("hidden_size", "intermediate_size"), layers=mlp_layers),
    )


def moe_block_tensors() -> tuple[CheckpointTensor, ...]:
    """The sparse MoE block's tensors (Qwen3-MoE's names): the router and, per expert, the
    gate, up and down projections."""
    T, layer = CheckpointTensor, "model.layers.{i}.mlp."
    return (
        T("layers.{i}.router", layer + "gate.weight", "blk.{i}.ffn_gate_inp.weight",
          ("num_experts", "hidden_size"), layers="moe"),
        T("layers.{i}.experts_gate_up", layer + "experts.{j}.gate_proj.weight",
          "blk.{i}.ffn_gate_exps.weight", ("moe_intermediate_size", "hidden_size"),
          layers="moe"),
        T("layers.{i}.experts_gate_up", layer + "experts.{j}.up_proj.weight",
          "blk.{i}.ffn_up_exps.weight", ("moe_intermediate_size", "hidden_size"),
          layers="moe"),
        T("layers.{i}.experts_down", layer + "experts.{j}.down_proj.weight",
          "blk.{i}.ffn_down_exps.weight", ("hidden_size", "moe_intermediate_size"),
          layers="moe"),
    )
