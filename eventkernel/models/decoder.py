"""The dense decoder shared by the Llama-3.x and Qwen3 families, as an eventkernel graph.

One graph serves decode and chunked prefill: a step carries ``T`` tokens from ``S``
sequences (both symbols, bounded by :class:`~eventkernel.models.config.Limits`). The
families differ only in fields of their :class:`~eventkernel.models.family.Family` (q/k
norm, config defaults); their checkpoint tables say which tensors make each graph weight.
"""
from __future__ import annotations

import math
from typing import Mapping

import torch

from eventkernel.ir.graph import DType, Graph, GraphBuilder, OpKind, TensorKind
from eventkernel.ir.symbols import SEQS, TOKENS, Expr, ceildiv, smin
from eventkernel.models.config import Limits, ModelConfig


def build_graph(config: ModelConfig, limits: Limits) -> Graph:
    """The decoder step as a graph, with the residual stream ``x`` updated in place."""
    T, S = TOKENS, SEQS
    d, hd = config.hidden_size, config.head_dim
    wdt, adt = limits.dtype, limits.dtype
    g = GraphBuilder({"T": limits.max_tokens, "S": limits.max_seqs})
    for name, shape in (("tokens", (T,)), ("positions", (T,)), ("slot_mapping", (T,)),
                        ("query_start", (S + 1,)), ("context_lens", (S,)),
                        ("block_table", (S, limits.pages_per_seq)), ("logits_indices", (S,))):
        g.tensor(name, shape, DType.I32, TensorKind.INPUT)
    g.tensor("rope_inv_freq", (hd // 2,), DType.F32, TensorKind.WEIGHT)
    act = lambda name, *shape: g.tensor(name, shape, adt, TensorKind.ACTIVATION)  # noqa: E731
    weight = lambda name, *shape: g.tensor(name, shape, wdt, TensorKind.WEIGHT)  # noqa: E731
    cache_shape = (limits.total_pages, limits.page_size, config.num_kv_heads, hd)

    # x: [T, D] residual stream
    g.op(OpKind.EMBEDDING, {"table": weight("embed", config.vocab_size, d), "ids": "tokens"},
         {"out": act("x", T, d)})
    for i in range(config.num_layers):
        p = f"layers.{i}."
        g.op(OpKind.RMSNORM, {"x": "x", "weight": weight(p + "attn_norm", d)},
             {"out": act("xn", T, d)}, eps=config.rms_norm_eps)
        g.op(OpKind.LINEAR, {"x": "xn", "weight": weight(p + "qkv", config.qkv_size, d)},
             {"out": act("qkv", T, config.qkv_size)}, label="qkv_proj")
        rope_inputs = {"qkv": "qkv", "positions": "positions", "slots": "slot_mapping",
                       "inv_freq": "rope_inv_freq"}
        if config.qk_norm:
            rope_inputs |= {"q_norm": weight(p + "q_norm", hd), "k_norm": weight(p + "k_norm", hd)}
        for cache in ("k_cache", "v_cache"):
            g.tensor(f"{cache}.{i}", cache_shape, adt, TensorKind.STATE)
        g.op(OpKind.ROPE_APPEND, rope_inputs,
             {"q": act("q", T, config.num_heads * hd), "k_cache": f"k_cache.{i}",
              "v_cache": f"v_cache.{i}"},
             num_heads=config.num_heads, num_kv_heads=config.num_kv_heads, head_dim=hd,
             eps=config.rms_norm_eps, layer=i)
        g.op(OpKind.ATTENTION,
             {"q": "q", "k_cache": f"k_cache.{i}", "v_cache": f"v_cache.{i}",
              "query_start": "query_start", "context_lens": "context_lens",
              "block_table": "block_table"},
             {"out": act("attn", T, config.num_heads * hd)},
             num_heads=config.num_heads, num_kv_heads=config.num_kv_heads, head_dim=hd,
             page_size=limits.page_size, max_context=limits.max_context, layer=i)
        g.op(OpKind.LINEAR, {"x": "attn", "weight": weight(p + "o_proj", d, config.num_heads * hd),
                             "residual": "x"}, {"out": "x"}, label="o_proj")
        g.op(OpKind.RMSNORM, {"x": "x", "weight": weight(p + "mlp_norm", d)},
             {"out": "xn"}, eps=config.rms_norm_eps)
        if config.is_moe_layer(i):
            _moe_block(g, config, i, act, weight)
            continue
        inter = config.intermediate_size
        g.op(OpKind.LINEAR, {"x": "xn", "weight": weight(p + "gate_up", 2 * inter, d)},
             {"out": act("gate_up", T, 2 * inter)}, label="gate_up_proj")
        g.op(OpKind.SILU_MUL, {"x": "gate_up"}, {"out": act("h", T, inter)})
        g.op(OpKind.LINEAR, {"x": "h", "weight": weight(p + "down", d, inter), "residual": "x"},
             {"out": "x"}, label="down_proj")
    # xs: [S, D], the last token of each sequence
    g.op(OpKind.GATHER, {"x": "x", "index": "logits_indices"}, {"out": act("xs", S, d)})
    g.op(OpKind.RMSNORM, {"x": "xs", "weight": weight("final_norm", d)},
         {"out": act("xsn", S, d)}, eps=config.rms_norm_eps)
    head = "embed" if config.tie_word_embeddings else weight("lm_head", config.vocab_size, d)
    g.op(OpKind.LINEAR, {"x": "xsn", "weight": head},
         {"out": g.tensor("logits", (S, config.vocab_size), DType.F32, TensorKind.OUTPUT)},
         label="lm_head")
    g.op(OpKind.ARGMAX, {"x": "logits"},
         {"out": g.tensor("next_tokens", (S,), DType.I32, TensorKind.OUTPUT)})
    return g.build(arch=config.arch, config=config, limits=limits)


# Rows (routed token slots) per expert work item: the M tile of an expert's linears.
MOE_ROWS_PER_ITEM = 64


def moe_work_items(config: ModelConfig) -> Expr:
    """The bound on the work items of an MoE layer's step: every expert that receives
    tokens has one, plus one per ``MOE_ROWS_PER_ITEM`` routed slots beyond the first."""
    slots = TOKENS * config.experts_per_token
    return smin(config.num_experts, slots) + ceildiv(slots, MOE_ROWS_PER_ITEM)


def _moe_block(g: GraphBuilder, config: ModelConfig, i: int, act, weight) -> None:
    """The sparse MoE MLP of layer ``i``, reading ``xn`` and adding into ``x``.

    router logits -> route (top-k, per-expert rows in expert order: the layer's work table,
    ``moe_work.{i}``, which says how many expert work items exist this step) -> each expert's
    gate_up over the token rows routed to it -> down (SiLU gating on the way in) -> each
    token's weighted sum of its experts, added to the residual stream. The route's outputs
    are per layer: a task past the run-time extent still reads the work table."""
    T, d, k, e = TOKENS, config.hidden_size, config.experts_per_token, config.num_experts
    p, inter = f"layers.{i}.", config.moe_intermediate_size
    items = moe_work_items(config)
    g.op(OpKind.LINEAR, {"x": "xn", "weight": weight(p + "router", e, d)},
         {"out": act("router_logits", T, e)}, label="router")
    i32 = lambda name, *shape: g.tensor(name, shape, DType.I32, TensorKind.ACTIVATION)  # noqa
    g.op(OpKind.MOE_ROUTE, {"logits": "router_logits"},
         {"weights": g.tensor(f"moe_weights.{i}", (T, k), DType.F32, TensorKind.ACTIVATION),
          "pos": i32(f"moe_pos.{i}", T, k), "rows": i32(f"moe_rows.{i}", T * k),
          "work": i32(f"moe_work.{i}", items + 1, 3)},
         top_k=k, norm_topk_prob=config.norm_topk_prob, rows_per_item=MOE_ROWS_PER_ITEM,
         layer=i)
    g.op(OpKind.EXPERT_LINEAR,
         {"x": "xn", "weight": weight(p + "experts_gate_up", e, 2 * inter, d),
          "work": f"moe_work.{i}", "rows": f"moe_rows.{i}"},
         {"out": act("moe_gate_up", T * k, 2 * inter)}, label="experts_gate_up",
         rows_per_item=MOE_ROWS_PER_ITEM, top_k=k, layer=i)
    g.op(OpKind.EXPERT_LINEAR,
         {"x": "moe_gate_up", "weight": weight(p + "experts_down", e, d, inter),
          "work": f"moe_work.{i}"},
         {"out": act("moe_down", T * k, d)}, label="experts_down", gated=True,
         rows_per_item=MOE_ROWS_PER_ITEM, top_k=k, layer=i)
    g.op(OpKind.MOE_COMBINE, {"y": "moe_down", "pos": f"moe_pos.{i}",
                              "weights": f"moe_weights.{i}", "residual": "x"},
         {"out": "x"}, top_k=k)


def rope_inv_freq(config: ModelConfig) -> torch.Tensor:
    """Inverse RoPE frequencies [head_dim/2] in fp32, with Llama-3 scaling if configured."""
    hd = config.head_dim
    inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.int64)
                                            .to(torch.float32) / hd))
    if not config.rope_scaling:
        return inv_freq
    s = dict(config.rope_scaling)
    old_len = s["original_max_position_embeddings"]
    low_wavelen = old_len / s["low_freq_factor"]
    high_wavelen = old_len / s["high_freq_factor"]
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_wavelen, inv_freq / s["factor"], inv_freq)
    smooth = (old_len / wavelen - s["low_freq_factor"]) / (s["high_freq_factor"]
                                                           - s["low_freq_factor"])
    smoothed = (1 - smooth) * scaled / s["factor"] + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return torch.where(medium, smoothed, scaled)


class WeightError(ValueError):
    """A checkpoint tensor is missing or has the wrong shape."""


def graph_weight_parts(config: ModelConfig) -> dict[str, tuple[str, ...]]:
    """Graph weight name -> the Hugging Face tensors it is made of, concatenated on dim 0
    in this order and shaped to the graph weight (a stack of experts is expert-major: each
    expert's parts, in table order, then the next expert's)."""
    parts: dict[str, list[tuple[int, int, str]]] = {}
    for pos, tensor in enumerate(config.family.tensors_of(config.tie_word_embeddings)):
        for k, (graph, hf) in enumerate(config.checkpoint_names(tensor)):
            expert = k % config.num_experts if tensor.per_expert else 0
            parts.setdefault(graph, []).append((expert, pos, hf))
    return {name: tuple(hf for _, _, hf in sorted(entries)) for name, entries in parts.items()}


def graph_weights(graph: Graph, checkpoint: Mapping[str, torch.Tensor], *,
                  consume: bool = False) -> dict[str, torch.Tensor]:
    """Graph weights (fused where the graph fuses them) from Hugging Face-named tensors, on
    the tensors' device. ``consume``: remove each part from ``checkpoint`` (a dict) once
    its graph weight is made, so the model is not held twice (a GPU holds one layer's
    parts beside the graph weights, not the whole checkpoint)."""
    config: ModelConfig = graph.meta["config"]
    dtype = torch.bfloat16 if graph.meta["limits"].dtype is DType.BF16 else torch.float32
    out: dict[str, torch.Tensor] = {"rope_inv_freq": rope_inv_freq(config)}
    for name, parts in graph_weight_parts(config).items():
        if name not in graph.tensors:
            continue
        missing = [p for p in parts if p not in checkpoint]
        if missing:
            raise WeightError(f"checkpoint is missing {missing[0]!r} (needed for {name})")
        # NOTE: cast each part before concatenating: no fp32 copy of a fused bf16 weight.
        tensors = [checkpoint[p].to(dtype) for p in parts]
        tensor = (torch.cat(tensors, dim=0) if len(tensors) > 1 else tensors[0]).contiguous()
        del tensors
        if consume:
            for p in parts:
                del checkpoint[p]
        expected = tuple(graph.tensors[name].shape)
        if len(expected) == 3 and tensor.numel() == math.prod(expected):   # a stack of experts
            tensor = tensor.view(expected)
        if tuple(tensor.shape) != expected:
            raise WeightError(f"checkpoint tensor(s) {', '.join(parts[:3])} have shape "
                              f"{tuple(tensor.shape)}, expected {expected} for {name}")
        out[name] = tensor
    return out


def random_checkpoint(config: ModelConfig, seed: int = 0,
                      dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Seeded random weights in Hugging Face naming, scaled to keep activations sane: the
    embedding N(0, 1), matrices N(0, 1/fan-in), norms near 1. Made in fp32 one tensor at a
    time and cast to ``dtype``."""
    gen = torch.Generator().manual_seed(seed)
    weights = {}
    for name, shape in config.checkpoint_shapes().items():
        weights[name] = _random_weight(tuple(shape), gen, name == "model.embed_tokens.weight",
                                       "cpu").to(dtype)
    return weights


def _random_weight(shape: tuple[int, ...], gen: torch.Generator, embedding: bool,
                   device: str | torch.device) -> torch.Tensor:
    """fp32 N(0, 1) for the embedding, N(0, 1/fan-in) for matrices, 1 + N(0, 0.01) for norms."""
    w = torch.randn(shape, generator=gen, device=device, dtype=torch.float32)
    if len(shape) == 1:
        return 1.0 + 0.1 * w
    return w if embedding else w * shape[-1] ** -0.5


def random_graph_weights(graph: Graph, seed: int = 0,
                         device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Seeded random graph weights made directly on ``device`` (benchmarks: no checkpoint,
    no fp32 copy on the host). Matrices are scaled by 1/sqrt(fan-in), norms near 1."""
    config: ModelConfig = graph.meta["config"]
    dtype = torch.bfloat16 if graph.meta["limits"].dtype is DType.BF16 else torch.float32
    gen = torch.Generator(device=device).manual_seed(seed)
    out = {"rope_inv_freq": rope_inv_freq(config).to(device)}
    for name, tensor in graph.tensors.items():
        if tensor.kind is not TensorKind.WEIGHT or name in out:
            continue
        shape = tuple(int(d) for d in tensor.shape)
        out[name] = _random_weight(shape, gen, name == "embed", device).to(dtype)
    return out
