"""Split-KV causal GQA attention over paged K/V: (seq, KV head, split) partial tasks write
fp32 partial outputs and log-sum-exps to two workspaces, then (seq, KV head) merge tasks
combine the splits. One op, two task types: ``attention`` and ``attn_merge``."""
from __future__ import annotations

import math
import random

import torch

from eventkernel.ir.graph import DType, Node, OpKind, Tensor, TensorKind
from eventkernel.ir.symbols import SEQS, TOKENS, evaluate
from eventkernel.lower.grid import (PAGES_OF_SEQ, ROWS_OF_SEQ, Access, Cost, Program, Seg,
                                    TaskGrid)
from eventkernel.lower.rules import Target, kv_splits
from eventkernel.tasks.cases import (CaseStep, TemplateCase, activation, one_op, state,
                                     step_input)
from eventkernel.tasks.common import Step, coord_run
from eventkernel.tasks.task_type import (Arg, Lowered, TaskType, Tensors, constant,
                                         float_constant, pointer)

# Workspaces shared by every layer (reused buffers: the events order the reuse).
PARTIAL = "attn_partial"    # [splits, T, H, HD] fp32
LSE = "attn_lse"            # [splits, T, H] fp32


def lower(node: Node, t: Tensors, target: Target) -> Lowered:
    q, out = t[node.inputs["q"]], t[node.outputs["out"]]
    h, kvh, hd = node.attrs["num_heads"], node.attrs["num_kv_heads"], node.attrs["head_dim"]
    g = h // kvh
    splits = kv_splits(kvh, node.attrs["max_context"], target)
    tokens, seqs = q.shape[0], t[node.inputs["context_lens"]].shape[0]
    o_part = Tensor(PARTIAL, (splits, tokens, h, hd), DType.F32, TensorKind.ACTIVATION)
    lse = Tensor(LSE, (splits, tokens, h), DType.F32, TensorKind.ACTIVATION)
    heads = lambda c: (c[1] * g, c[1] * g + g)  # noqa: E731
    seq_rows = lambda c: Seg(ROWS_OF_SEQ, c[0])  # noqa: E731
    page_size = t[node.inputs["k_cache"]].shape[1]
    pages = lambda c, b: (Seg(PAGES_OF_SEQ, c[0]), (0, page_size),  # noqa: E731
                          (c[1], c[1] + 1), (0, hd))
    seq_inputs = [Access(node.inputs[n], "r",
                         lambda c, b: ((0, evaluate(t[node.inputs[n]].shape[0], b)),))
                  for n in ("query_start", "context_lens")]
    block_table = node.inputs["block_table"]
    seq_inputs.append(Access(block_table, "r",
                             lambda c, b: ((c[0], c[0] + 1), (0, t[block_table].shape[1]))))
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
    partial_cost = lambda c, b: Cost(  # noqa: E731
        0, 2 * keys * hd * 2 + g * hd * 2, 4 * g * keys * hd)
    merge_cost = lambda c, b: Cost(  # noqa: E731
        0, splits * g * hd * 4 + g * hd * 2, splits * g * hd * 3)
    tile = {"G": g, "HD": hd, "splits": splits, "page_size": page_size}
    grids = (TaskGrid(f"{node.name}.partial", "attention", node, (seqs, kvh, splits),
                      ("seq", "kv_head", "split"), tile, partial_acc, partial_cost),
             TaskGrid(f"{node.name}.merge", "attn_merge", node, (seqs, kvh),
                      ("seq", "kv_head"), tile, merge_acc, merge_cost))
    return Lowered(grids, {o_part.name: o_part, lse.name: lse})


def twin(g: TaskGrid, c: tuple[int, ...], s: Step) -> None:
    """One split of one sequence's keys for the G query heads of each of the KV heads
    ``c[1]`` (one, or a grouped run)."""
    seq, split = c[0], c[2]
    if seq >= s.num_seqs:
        return
    kv_heads = coord_run(c[1])
    b, node, a = s.buffers, g.node, g.node.attrs
    gs, hd, splits, page_size = g.tile["G"], a["head_dim"], g.tile["splits"], g.tile["page_size"]
    nh, h0, h1 = len(kv_heads), kv_heads.start, kv_heads.stop
    qs, qe = (int(v) for v in b[node.inputs["query_start"]][seq:seq + 2])
    ctx = int(b[node.inputs["context_lens"]][seq])
    chunk = math.ceil(ctx / splits)
    k0, k1 = split * chunk, min(ctx, split * chunk + chunk)
    o_part, lse = b[PARTIAL], b[LSE]
    heads = slice(h0 * gs, h1 * gs)
    q_len = qe - qs
    if k1 <= k0 or q_len <= 0:
        o_part[split, qs:qe, heads] = 0.0
        lse[split, qs:qe, heads] = -math.inf
        return
    key = ("attention", node.inputs["block_table"], seq, k0, k1, q_len, page_size)
    if key not in s.memo:       # the same for every layer and KV head of the step
        keys = torch.arange(k0, k1)
        pages = b[node.inputs["block_table"]][seq, keys // page_size].long()
        query_pos = ctx - q_len + torch.arange(q_len)
        hidden = keys[None, :] > query_pos[:, None]                             # [t, nk]
        s.memo[key] = pages, keys % page_size, hidden[:, None, None, :]
    pages, in_page, hidden = s.memo[key]
    kk = b[node.inputs["k_cache"]][pages, in_page, h0:h1].float()           # [nk, nh, hd]
    vv = b[node.inputs["v_cache"]][pages, in_page, h0:h1].float()
    q = b[node.inputs["q"]][qs:qe, h0 * gs * hd:h1 * gs * hd].float()
    q = q.reshape(q_len, nh, gs, hd)
    scores = torch.einsum("thgd,khd->thgk", q, kk) / math.sqrt(hd)
    scores = scores.masked_fill(hidden, -math.inf)
    m = scores.amax(-1, keepdim=True)
    m_safe = torch.where(torch.isinf(m), torch.zeros_like(m), m)
    p = torch.exp(scores - m_safe)
    total = p.sum(-1, keepdim=True)
    out = torch.einsum("thgk,khd->thgd", p, vv) / total.clamp_min(1e-30)
    out = torch.where(total > 0, out, torch.zeros_like(out))
    log_sum = torch.where(total[..., 0] > 0, (m_safe + total.log())[..., 0],
                          torch.full_like(total[..., 0], -math.inf))
    o_part[split, qs:qe, heads] = out.reshape(q_len, nh * gs, hd)
    lse[split, qs:qe, heads] = log_sum.reshape(q_len, nh * gs)


def merge_twin(g: TaskGrid, c: tuple[int, ...], s: Step) -> None:
    """Combine the splits of one sequence's G query heads of each of the KV heads ``c[1]``
    by their log-sum-exps."""
    seq, kv_heads = c[0], coord_run(c[1])
    if seq >= s.num_seqs:
        return
    b, node = s.buffers, g.node
    gs, hd = g.tile["G"], node.attrs["head_dim"]
    qs, qe = (int(v) for v in b[node.inputs["query_start"]][seq:seq + 2])
    heads = slice(kv_heads.start * gs, kv_heads.stop * gs)
    lse = b[LSE][:, qs:qe, heads]                              # [splits, t, heads]
    parts = b[PARTIAL][:, qs:qe, heads]                        # [splits, t, heads, hd]
    m = lse.amax(0, keepdim=True)
    w = torch.exp(lse - m)
    out = (w[..., None] * parts).sum(0) / w.sum(0)[..., None]
    dst = b[node.outputs["out"]]
    dst[qs:qe, heads.start * hd:heads.stop * hd] = \
        out.reshape(qe - qs, (heads.stop - heads.start) * hd).to(dst.dtype)


def cuda(grid: TaskGrid, program: Program) -> tuple[str, list[Arg]]:
    ins, tile = grid.node.inputs, grid.tile
    return (f"AttentionTask<{tile['HD']}, {tile['G']}>",
            [pointer("const bf16*", ins["q"]), pointer("const bf16*", ins["k_cache"]),
             pointer("const bf16*", ins["v_cache"]), pointer("float*", PARTIAL),
             pointer("float*", LSE), constant("int", grid.node.attrs["num_kv_heads"]),
             constant("int", tile["page_size"]), constant("int", tile["splits"]),
             constant("int", program.maxima["T"]),
             float_constant(1.0 / math.sqrt(tile["HD"]))])


def merge_cuda(grid: TaskGrid, program: Program) -> tuple[str, list[Arg]]:
    tile = grid.tile
    return (f"AttentionMergeTask<{tile['HD']}, {tile['G']}>",
            [pointer("const float*", PARTIAL), pointer("const float*", LSE),
             pointer("bf16*", grid.node.outputs["out"]),
             constant("int", grid.node.attrs["num_kv_heads"]), constant("int", tile["splits"]),
             constant("int", program.maxima["T"])])


# (q_lens, ctx_lens, splits): T = 1, 5, 16, 64; context lengths not multiples of the page
# size; more splits than keys (empty splits); chunked prefill (ctx > q_len).
_STEPS = (([1], [300], 4), ([1, 1, 1, 1, 1], [1, 16, 37, 300, 1000], 4),
          ([5, 10, 1], [5, 100, 77], 3), ([64], [97], 2), ([1, 2], [3, 2], 8),
          ([16, 3], [40, 3], 1))
_PAGE_SIZE = 16


def cases() -> tuple[TemplateCase, ...]:
    """Partials and merge for head_dim 64 and 128, G = 4 and 8, over scattered pages;
    one sequence past the step. The split count is the target's (2 KV heads)."""
    out = []
    for hd, g in ((64, 4), (128, 4), (128, 8)):
        for q_lens, ctx_lens, splits in _STEPS:
            rng = random.Random(sum(ctx_lens) + hd)
            kvh, seqs, tokens = 2, len(q_lens), sum(q_lens)
            per_seq = [-(-c // _PAGE_SIZE) for c in ctx_lens]
            pages = sum(per_seq) + 3
            order = rng.sample(range(pages), pages)
            table, used = [], 0
            for n in per_seq:
                table.append(tuple(order[used:used + n]) + (0,) * (max(per_seq) - n))
                used += n
            starts = [0]
            for q in q_lens:
                starts.append(starts[-1] + q)
            graph = one_op(
                OpKind.ATTENTION, {"T": tokens + 3, "S": seqs + 1},
                {"q": activation(TOKENS, g * kvh * hd),
                 "k_cache": state(pages, _PAGE_SIZE, kvh, hd),
                 "v_cache": state(pages, _PAGE_SIZE, kvh, hd),
                 "query_start": step_input(SEQS + 1), "context_lens": step_input(SEQS),
                 "block_table": step_input(SEQS, max(per_seq)),
                 "attn": activation(TOKENS, g * kvh * hd)},
                {"q": "q", "k_cache": "k_cache", "v_cache": "v_cache",
                 "query_start": "query_start", "context_lens": "context_lens",
                 "block_table": "block_table"}, {"out": "attn"},
                num_heads=g * kvh, num_kv_heads=kvh, head_dim=hd, max_context=4096)
            step = CaseStep(tokens, seqs, {"query_start": tuple(starts),
                                           "context_lens": tuple(ctx_lens),
                                           "block_table": tuple(table)}, rows=tokens)
            out.append(TemplateCase(f"attn_hd{hd}_g{g}_T{tokens}_split{splits}", graph,
                                    Target(num_workers=kvh * splits), (step,),
                                    abs_tol={LSE: 2e-2}))
    return tuple(out)


ATTENTION = TaskType("attention", twin, cuda, "tasks/attention.cuh", OpKind.ATTENTION, lower,
                     cases, group_axis=1)
# NOTE: attention's lowering emits the merge grids; the merge owns no op.
ATTN_MERGE = TaskType("attn_merge", merge_twin, merge_cuda, "tasks/attention_merge.cuh",
                      group_axis=1)
