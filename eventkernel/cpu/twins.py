"""CPU twins: the reference tile function of every task type, in torch on the CPU.

Each twin computes exactly the region its task grid declares, for the real shape of the
step (rows past the real token count are skipped), in fp32, storing in the buffer's
dtype with the same rounding points as Hugging Face's modelling code. GPU task templates
are checked against these.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from eventkernel.ir.symbols import evaluate
from eventkernel.lower.grid import TaskGrid


@dataclass(frozen=True)
class Step:
    """The real shape of the step and the buffers every task reads and writes."""

    num_tokens: int
    num_seqs: int
    buffers: dict[str, torch.Tensor]
    row_dims: dict[str, object]          # tensor -> its first dim (int or expression)

    @property
    def binding(self) -> dict[str, int]:
        return {"T": self.num_tokens, "S": self.num_seqs}

    def rows(self, grid: TaskGrid, tensor: str, tile: int) -> range:
        n = evaluate(self.row_dims[tensor], self.binding)
        tm = grid.tile["TM"]
        return range(min(n, tile * tm), min(n, tile * tm + tm))


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Hugging Face's RMSNorm: normalise in fp32, round, scale by the weight."""
    xf = x.float()
    normed = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)
    return weight * normed


def _slice(rows: range) -> slice:
    return slice(rows.start, rows.stop)


def embedding(g: TaskGrid, c: tuple[int, ...], s: Step) -> None:
    b, node = s.buffers, g.node
    rows = s.rows(g, node.outputs["out"], c[0])
    tc = g.tile["TC"]
    cols = slice(c[1] * tc, c[1] * tc + tc)
    ids = b[node.inputs["ids"]][_slice(rows)].long()
    b[node.outputs["out"]][_slice(rows), cols] = b[node.inputs["table"]][ids, cols]


def linear(g: TaskGrid, c: tuple[int, ...], s: Step) -> None:
    b, node = s.buffers, g.node
    rows = _slice(s.rows(g, node.inputs["x"], c[0]))
    tn = g.tile["TN"]
    w = b[node.inputs["weight"]]
    cols = slice(c[1] * tn, min(w.shape[0], c[1] * tn + tn))
    a = b[node.inputs["x"]][rows]
    if "norm" in node.inputs:
        a = rms_norm(a, b[node.inputs["norm"]], node.attrs["eps"])
    if g.tile["gated"]:
        a = silu_gate(a[:, :w.shape[1]], a[:, w.shape[1]:])
    out = b[node.outputs["out"]]
    acc = a.float() @ w[cols].float().T
    if "residual" in node.inputs:
        acc = b[node.inputs["residual"]][rows, cols].float() + acc.to(out.dtype).float()
    out[rows, cols] = acc.to(out.dtype)


def rope_append(g: TaskGrid, c: tuple[int, ...], s: Step) -> None:
    b, node, a = s.buffers, g.node, g.node.attrs
    rows = s.rows(g, node.inputs["qkv"], c[0])
    if not len(rows):
        return
    h, kvh, hd, gs = a["num_heads"], a["num_kv_heads"], a["head_dim"], g.tile["G"]
    head = c[1]
    qkv = b[node.inputs["qkv"]][_slice(rows)]
    dt = qkv.dtype
    q = qkv[:, head * gs * hd:(head + 1) * gs * hd].reshape(len(rows), gs, hd)
    k = qkv[:, (h + head) * hd:(h + head + 1) * hd].reshape(len(rows), 1, hd)
    v = qkv[:, (h + kvh + head) * hd:(h + kvh + head + 1) * hd]
    if "q_norm" in node.inputs:
        q = rms_norm(q, b[node.inputs["q_norm"]], a["eps"])
        k = rms_norm(k, b[node.inputs["k_norm"]], a["eps"])
    pos = b[node.inputs["positions"]][_slice(rows)].float()
    angles = pos[:, None] * b[node.inputs["inv_freq"]][None, :]
    cos = torch.cat([angles.cos()] * 2, -1).to(dt)[:, None, :]
    sin = torch.cat([angles.sin()] * 2, -1).to(dt)[:, None, :]

    def rotate(x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x[..., :hd // 2], x[..., hd // 2:]
        rotated = torch.cat([-x2, x1], -1)
        return (x.float() * cos.float() + rotated.float() * sin.float()).to(dt)

    b[node.outputs["q"]][_slice(rows), head * gs * hd:(head + 1) * gs * hd] = \
        rotate(q).reshape(len(rows), gs * hd)
    slots = b[node.inputs["slots"]][_slice(rows)].long()
    kc, vc = b[node.outputs["k_cache"]], b[node.outputs["v_cache"]]
    page_size = kc.shape[1]
    kc[slots // page_size, slots % page_size, head] = rotate(k)[:, 0]
    vc[slots // page_size, slots % page_size, head] = v


def attention(g: TaskGrid, c: tuple[int, ...], s: Step) -> None:
    seq, head, split = c
    if seq >= s.num_seqs:
        return
    b, node, a = s.buffers, g.node, g.node.attrs
    gs, hd, splits, page_size = g.tile["G"], a["head_dim"], g.tile["splits"], g.tile["page_size"]
    qs, qe = (int(v) for v in b[node.inputs["query_start"]][seq:seq + 2])
    ctx = int(b[node.inputs["context_lens"]][seq])
    chunk = math.ceil(ctx / splits)
    k0, k1 = split * chunk, min(ctx, split * chunk + chunk)
    o_part, lse = b["attn_partial"], b["attn_lse"]
    heads = slice(head * gs, head * gs + gs)
    q_len = qe - qs
    if k1 <= k0 or q_len <= 0:
        o_part[split, qs:qe, heads] = 0.0
        lse[split, qs:qe, heads] = -math.inf
        return
    keys = torch.arange(k0, k1)
    pages = b[node.inputs["block_table"]][seq, keys // page_size].long()
    kk = b[node.inputs["k_cache"]][pages, keys % page_size, head].float()     # [nk, hd]
    vv = b[node.inputs["v_cache"]][pages, keys % page_size, head].float()
    q = b[node.inputs["q"]][qs:qe, head * gs * hd:(head + 1) * gs * hd].float()
    q = q.reshape(q_len, gs, hd)
    scores = torch.einsum("tgd,kd->tgk", q, kk) / math.sqrt(hd)
    query_pos = ctx - q_len + torch.arange(q_len)
    visible = keys[None, :] <= query_pos[:, None]                               # [t, nk]
    scores = scores.masked_fill(~visible[:, None, :], -math.inf)
    m = scores.amax(-1, keepdim=True)
    m_safe = torch.where(torch.isinf(m), torch.zeros_like(m), m)
    p = torch.exp(scores - m_safe)
    total = p.sum(-1, keepdim=True)
    out = torch.einsum("tgk,kd->tgd", p, vv) / total.clamp_min(1e-30)
    o_part[split, qs:qe, heads] = torch.where(total > 0, out, torch.zeros_like(out))
    lse[split, qs:qe, heads] = torch.where(total[..., 0] > 0, (m_safe + total.log())[..., 0],
                                           torch.full_like(total[..., 0], -math.inf))


def attn_merge(g: TaskGrid, c: tuple[int, ...], s: Step) -> None:
    seq, head = c
    if seq >= s.num_seqs:
        return
    b, node = s.buffers, g.node
    gs, hd = g.tile["G"], node.attrs["head_dim"]
    qs, qe = (int(v) for v in b[node.inputs["query_start"]][seq:seq + 2])
    heads = slice(head * gs, head * gs + gs)
    lse = b["attn_lse"][:, qs:qe, heads]                       # [splits, t, G]
    parts = b["attn_partial"][:, qs:qe, heads]                 # [splits, t, G, hd]
    m = lse.amax(0, keepdim=True)
    w = torch.exp(lse - m)
    out = (w[..., None] * parts).sum(0) / w.sum(0)[..., None]
    dst = b[node.outputs["out"]]
    dst[qs:qe, head * gs * hd:(head + 1) * gs * hd] = out.reshape(qe - qs, gs * hd).to(dst.dtype)


def silu_gate(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """Hugging Face's MLP gating: silu(gate) rounded to the dtype, times up."""
    return (F.silu(gate.float()).to(gate.dtype).float() * up.float()).to(gate.dtype)


def silu_mul(g: TaskGrid, c: tuple[int, ...], s: Step) -> None:
    b, node = s.buffers, g.node
    rows = _slice(s.rows(g, node.inputs["x"], c[0]))
    tc, inter = g.tile["TC"], g.tile["I"]
    cols = slice(c[1] * tc, min(inter, c[1] * tc + tc))
    x = b[node.inputs["x"]]
    b[node.outputs["out"]][rows, cols] = silu_gate(
        x[rows, cols], x[rows, inter + cols.start:inter + cols.stop])


def gather(g: TaskGrid, c: tuple[int, ...], s: Step) -> None:
    b, node = s.buffers, g.node
    tc = g.tile["TC"]
    cols = slice(c[0] * tc, c[0] * tc + tc)
    index = b[node.inputs["index"]][:s.num_seqs].long()
    b[node.outputs["out"]][:s.num_seqs, cols] = b[node.inputs["x"]][index, cols]


def rmsnorm(g: TaskGrid, c: tuple[int, ...], s: Step) -> None:
    b, node = s.buffers, g.node
    rows = _slice(s.rows(g, node.inputs["x"], c[0]))
    b[node.outputs["out"]][rows] = rms_norm(b[node.inputs["x"]][rows], b[node.inputs["weight"]],
                                            node.attrs["eps"])


def argmax(g: TaskGrid, c: tuple[int, ...], s: Step) -> None:
    b, node = s.buffers, g.node
    rows = _slice(s.rows(g, node.inputs["x"], c[0]))
    b[node.outputs["out"]][rows] = b[node.inputs["x"]][rows].argmax(-1).to(torch.int32)


TWINS: dict[str, Callable[[TaskGrid, tuple[int, ...], Step], None]] = {
    "embedding": embedding, "linear": linear, "rope_append": rope_append,
    "attention": attention, "attn_merge": attn_merge, "silu_mul": silu_mul,
    "gather": gather, "rmsnorm": rmsnorm, "argmax": argmax,
}
