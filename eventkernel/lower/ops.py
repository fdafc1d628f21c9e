"""Lowering of each op kind to task grids with per-task read/write regions."""
from __future__ import annotations

import math
from typing import Callable

from eventkernel.ir.graph import DType, Node, OpKind, Tensor, TensorKind
from eventkernel.ir.symbols import Binding, ceildiv, evaluate
from eventkernel.lower.grid import Access, Cost, Seg, TaskGrid
from eventkernel.lower.rules import Target, elementwise_tile, kv_splits, linear_tile_n

Tensors = dict[str, Tensor]
ROWS_OF_SEQ = "token rows of sequence"
SLOTS_OF_ROWTILE = "cache slots of row tile"
PAGES_OF_SEQ = "cache pages of sequence"


def _rows(tensor: Tensor, tm: int) -> Callable[[int, Binding], tuple[int, int]]:
    def rows(r: int, binding: Binding) -> tuple[int, int]:
        n = evaluate(tensor.shape[0], binding)
        return (min(n, r * tm), min(n, r * tm + tm))
    return rows


def _span(lo: int, hi: int, n: int) -> tuple[int, int]:
    return (min(lo, n), min(hi, n))


def lower_linear(node: Node, t: Tensors, target: Target) -> list[TaskGrid]:
    x, w, out = t[node.inputs["x"]], t[node.inputs["weight"]], t[node.outputs["out"]]
    n, k = w.shape
    gated = bool(node.attrs.get("gated", False))   # x is [gate | up], 2k wide
    x_width = 2 * k if gated else k
    tm, tn = target.rows_per_tile, linear_tile_n(n, target, k)
    rows = _rows(x, tm)
    cols = lambda c: _span(c * tn, c * tn + tn, n)  # noqa: E731
    acc = [Access(x.name, "r", lambda c, b: (rows(c[0], b), (0, x_width))),
           Access(w.name, "r", lambda c, b: (cols(c[1]), (0, k)))]
    if "norm" in node.inputs:
        acc.append(Access(node.inputs["norm"], "r", lambda c, b: ((0, k),)))
    if "residual" in node.inputs:
        acc.append(Access(node.inputs["residual"], "r", lambda c, b: (rows(c[0], b), cols(c[1]))))
    acc.append(Access(out.name, "w", lambda c, b: (rows(c[0], b), cols(c[1]))))

    def cost(c: tuple[int, ...], b: Binding) -> Cost:
        m, width = _len(rows(c[0], b)), _len(cols(c[1]))
        return Cost(width * k * w.dtype.itemsize,
                    m * x_width * x.dtype.itemsize + m * width * out.dtype.itemsize,
                    2 * m * width * k)

    tile = {"TM": tm, "TN": tn, "K": k, "norm": "norm" in node.inputs,
            "residual": "residual" in node.inputs, "gated": gated,
            "out_dtype": out.dtype.value}
    return [TaskGrid(node.name, "linear", node, (ceildiv(x.shape[0], tm), math.ceil(n / tn)),
                     ("row_tile", "col_tile"), tile, tuple(acc), cost)]


def lower_embedding(node: Node, t: Tensors, target: Target) -> list[TaskGrid]:
    table, ids, out = t[node.inputs["table"]], t[node.inputs["ids"]], t[node.outputs["out"]]
    d = out.shape[1]
    tm, tc = target.rows_per_tile, elementwise_tile(d, target)
    rows = _rows(out, tm)
    cols = lambda c: _span(c * tc, c * tc + tc, d)  # noqa: E731
    acc = (Access(ids.name, "r", lambda c, b: (rows(c[0], b),)),
           Access(table.name, "r", lambda c, b: ((0, table.shape[0]), cols(c[1])),
                  "rows chosen by the token ids"),
           Access(out.name, "w", lambda c, b: (rows(c[0], b), cols(c[1]))))
    cost = lambda c, b: Cost(_len(rows(c[0], b)) * _len(cols(c[1])) * table.dtype.itemsize,  # noqa
                             _len(rows(c[0], b)) * _len(cols(c[1])) * out.dtype.itemsize, 0)
    return [TaskGrid(node.name, "embedding", node, (ceildiv(out.shape[0], tm), math.ceil(d / tc)),
                     ("row_tile", "col_tile"), {"TM": tm, "TC": tc, "D": d}, acc, cost)]


def lower_rmsnorm(node: Node, t: Tensors, target: Target) -> list[TaskGrid]:
    x, out = t[node.inputs["x"]], t[node.outputs["out"]]
    d, tm = x.shape[1], target.rows_per_tile
    rows = _rows(x, tm)
    acc = (Access(x.name, "r", lambda c, b: (rows(c[0], b), (0, d))),
           Access(node.inputs["weight"], "r", lambda c, b: ((0, d),)),
           Access(out.name, "w", lambda c, b: (rows(c[0], b), (0, d))))
    cost = lambda c, b: Cost(d * 2, 2 * _len(rows(c[0], b)) * d * x.dtype.itemsize,  # noqa
                             4 * _len(rows(c[0], b)) * d)
    return [TaskGrid(node.name, "rmsnorm", node, (ceildiv(x.shape[0], tm),), ("row_tile",),
                     {"TM": tm, "D": d}, acc, cost)]


def lower_rope_append(node: Node, t: Tensors, target: Target) -> list[TaskGrid]:
    qkv, q = t[node.inputs["qkv"]], t[node.outputs["q"]]
    h, kvh, hd = node.attrs["num_heads"], node.attrs["num_kv_heads"], node.attrs["head_dim"]
    g, tm = h // kvh, target.rows_per_tile
    rows = _rows(qkv, tm)
    kcache, vcache = node.outputs["k_cache"], node.outputs["v_cache"]
    page_size = t[kcache].shape[1]
    q_cols = lambda c: (c[1] * g * hd, (c[1] + 1) * g * hd)  # noqa: E731
    k_cols = lambda c: ((h + c[1]) * hd, (h + c[1] + 1) * hd)  # noqa: E731
    v_cols = lambda c: ((h + kvh + c[1]) * hd, (h + kvh + c[1] + 1) * hd)  # noqa: E731
    slot = lambda c, b: (Seg(SLOTS_OF_ROWTILE, c[0]), (0, page_size), (c[1], c[1] + 1), (0, hd))  # noqa
    acc = [Access(qkv.name, "r", lambda c, b: (rows(c[0], b), q_cols(c))),
           Access(qkv.name, "r", lambda c, b: (rows(c[0], b), k_cols(c))),
           Access(qkv.name, "r", lambda c, b: (rows(c[0], b), v_cols(c))),
           Access(node.inputs["positions"], "r", lambda c, b: (rows(c[0], b),)),
           Access(node.inputs["slots"], "r", lambda c, b: (rows(c[0], b),)),
           Access(node.inputs["inv_freq"], "r", lambda c, b: ((0, hd // 2),))]
    for name in ("q_norm", "k_norm"):
        if name in node.inputs:
            acc.append(Access(node.inputs[name], "r", lambda c, b: ((0, hd),)))
    acc += [Access(q.name, "w", lambda c, b: (rows(c[0], b), q_cols(c))),
            Access(kcache, "w", slot, "slots of this row tile's tokens (data-dependent)"),
            Access(vcache, "w", slot, "slots of this row tile's tokens (data-dependent)")]
    cost = lambda c, b: Cost(0, _len(rows(c[0], b)) * (g + 2) * hd * 2 * 2,  # noqa: E731
                             _len(rows(c[0], b)) * (g + 1) * hd * 8)
    tile = {"TM": tm, "G": g, "HD": hd, "qk_norm": "q_norm" in node.inputs}
    return [TaskGrid(node.name, "rope_append", node, (ceildiv(qkv.shape[0], tm), kvh),
                     ("row_tile", "kv_head"), tile, tuple(acc), cost)]


def lower_attention(node: Node, t: Tensors, target: Target) -> tuple[list[TaskGrid], Tensors]:
    """Split-KV attention: (seq, kv_head, split) partials, then a (seq, kv_head) merge."""
    q, out = t[node.inputs["q"]], t[node.outputs["out"]]
    h, kvh, hd = node.attrs["num_heads"], node.attrs["num_kv_heads"], node.attrs["head_dim"]
    g = h // kvh
    splits = kv_splits(kvh, node.attrs["max_context"], target)
    tokens, seqs = q.shape[0], t[node.inputs["context_lens"]].shape[0]
    # Workspaces shared by every layer (reused buffers: the events order the reuse).
    o_part = Tensor("attn_partial", (splits, tokens, h, hd), DType.F32, TensorKind.ACTIVATION)
    lse = Tensor("attn_lse", (splits, tokens, h), DType.F32, TensorKind.ACTIVATION)
    heads = lambda c: (c[1] * g, c[1] * g + g)  # noqa: E731
    seq_rows = lambda c: Seg(ROWS_OF_SEQ, c[0])  # noqa: E731
    page_size = t[node.inputs["k_cache"]].shape[1]
    pages = lambda c, b: (Seg(PAGES_OF_SEQ, c[0]), (0, page_size), (c[1], c[1] + 1), (0, hd))  # noqa
    seq_inputs = [Access(node.inputs[n], "r", lambda c, b: ((0, evaluate(t[node.inputs[n]].shape[0], b)),))
                  for n in ("query_start", "context_lens")]
    seq_inputs.append(Access(node.inputs["block_table"], "r",
                             lambda c, b: ((c[0], c[0] + 1), (0, t[node.inputs["block_table"]].shape[1]))))
    partial_acc = (
        Access(q.name, "r", lambda c, b: (seq_rows(c), (heads(c)[0] * hd, heads(c)[1] * hd)),
               "query rows of sequence s (data-dependent)"),
        Access(node.inputs["k_cache"], "r", pages, "pages of sequence s (block table)"),
        Access(node.inputs["v_cache"], "r", pages, "pages of sequence s (block table)"),
        *seq_inputs,
        Access(o_part.name, "w", lambda c, b: ((c[2], c[2] + 1), seq_rows(c), heads(c), (0, hd))),
        Access(lse.name, "w", lambda c, b: ((c[2], c[2] + 1), seq_rows(c), heads(c))))
    merge_acc = (
        Access(o_part.name, "r", lambda c, b: ((0, splits), seq_rows(c), heads(c), (0, hd))),
        Access(lse.name, "r", lambda c, b: ((0, splits), seq_rows(c), heads(c))),
        *seq_inputs[:1],
        Access(out.name, "w", lambda c, b: (seq_rows(c), (heads(c)[0] * hd, heads(c)[1] * hd))))
    context = min(node.attrs["max_context"], 512)        # cost model's typical context
    keys = math.ceil(context / splits)
    partial_cost = lambda c, b: Cost(0, 2 * keys * hd * 2 + g * hd * 2, 4 * g * keys * hd)  # noqa
    merge_cost = lambda c, b: Cost(0, splits * g * hd * 4 + g * hd * 2, splits * g * hd * 3)  # noqa
    tile = {"G": g, "HD": hd, "splits": splits, "page_size": page_size}
    grids = [TaskGrid(f"{node.name}.partial", "attention", node, (seqs, kvh, splits),
                      ("seq", "kv_head", "split"), tile, partial_acc, partial_cost),
             TaskGrid(f"{node.name}.merge", "attn_merge", node, (seqs, kvh),
                      ("seq", "kv_head"), tile, merge_acc, merge_cost)]
    return grids, {o_part.name: o_part, lse.name: lse}


def lower_silu_mul(node: Node, t: Tensors, target: Target) -> list[TaskGrid]:
    x, out = t[node.inputs["x"]], t[node.outputs["out"]]
    inter, tm = out.shape[1], target.rows_per_tile
    tc = elementwise_tile(inter, target)
    rows = _rows(x, tm)
    cols = lambda c, off=0: _span(off + c * tc, off + c * tc + tc, off + inter)  # noqa: E731
    acc = (Access(x.name, "r", lambda c, b: (rows(c[0], b), cols(c[1]))),
           Access(x.name, "r", lambda c, b: (rows(c[0], b), cols(c[1], inter))),
           Access(out.name, "w", lambda c, b: (rows(c[0], b), cols(c[1]))))
    cost = lambda c, b: Cost(0, 3 * _len(rows(c[0], b)) * _len(cols(c[1])) * 2,  # noqa: E731
                             5 * _len(rows(c[0], b)) * _len(cols(c[1])))
    return [TaskGrid(node.name, "silu_mul", node, (ceildiv(x.shape[0], tm), math.ceil(inter / tc)),
                     ("row_tile", "col_tile"), {"TM": tm, "TC": tc, "I": inter}, acc, cost)]


def lower_gather(node: Node, t: Tensors, target: Target) -> list[TaskGrid]:
    x, index, out = t[node.inputs["x"]], t[node.inputs["index"]], t[node.outputs["out"]]
    d = x.shape[1]
    tc = elementwise_tile(d, target)
    cols = lambda c: _span(c[0] * tc, c[0] * tc + tc, d)  # noqa: E731
    acc = (Access(x.name, "r", lambda c, b: ((0, evaluate(x.shape[0], b)), cols(c)),
                  "rows named by logits_indices (data-dependent)"),
           Access(index.name, "r", lambda c, b: ((0, evaluate(index.shape[0], b)),)),
           Access(out.name, "w", lambda c, b: ((0, evaluate(out.shape[0], b)), cols(c))))
    cost = lambda c, b: Cost(0, 2 * evaluate(out.shape[0], b) * _len(cols(c)) * 2, 0)  # noqa
    return [TaskGrid(node.name, "gather", node, (math.ceil(d / tc),), ("col_tile",),
                     {"TC": tc, "D": d}, acc, cost)]


def lower_argmax(node: Node, t: Tensors, target: Target) -> list[TaskGrid]:
    # One row per task: a row is the whole vocabulary (0.5 MB of fp32 logits for Llama 3),
    # and rows on different SMs reduce in parallel at the very end of the step, where
    # nothing else is left to overlap with (64 rows in one task took 0.84 ms on an H200).
    x, out = t[node.inputs["x"]], t[node.outputs["out"]]
    v, tm = x.shape[1], 1
    rows = _rows(x, tm)
    acc = (Access(x.name, "r", lambda c, b: (rows(c[0], b), (0, v))),
           Access(out.name, "w", lambda c, b: (rows(c[0], b),)))
    cost = lambda c, b: Cost(0, _len(rows(c[0], b)) * v * 4, _len(rows(c[0], b)) * v)  # noqa
    return [TaskGrid(node.name, "argmax", node, (ceildiv(x.shape[0], tm),), ("row_tile",),
                     {"TM": tm, "V": v}, acc, cost)]


LOWERINGS = {
    OpKind.LINEAR: lower_linear, OpKind.EMBEDDING: lower_embedding,
    OpKind.RMSNORM: lower_rmsnorm, OpKind.ROPE_APPEND: lower_rope_append,
    OpKind.SILU_MUL: lower_silu_mul, OpKind.GATHER: lower_gather, OpKind.ARGMAX: lower_argmax,
}


def _len(span: tuple[int, int]) -> int:
    return max(0, span[1] - span[0])
