"""RoPE + paged KV append: per (row tile, KV head), optional per-head q/k RMSNorm, rotate
q and k, write q and append k and v at each token's cache slot."""
from __future__ import annotations

import random

import torch

from eventkernel.ir.graph import DType, Node, OpKind
from eventkernel.ir.symbols import TOKENS, ceildiv
from eventkernel.lower.grid import SLOTS_OF_ROWTILE, Access, Cost, Program, Seg, TaskGrid
from eventkernel.lower.rules import Target
from eventkernel.tasks.cases import (CaseStep, TemplateCase, activation, one_op, state,
                                     step_input, weight)
from eventkernel.tasks.common import Step, coord_run, length, rms_norm, row_slice, tile_rows
from eventkernel.tasks.task_type import (Arg, Lowered, TaskType, Tensors, constant,
                                         float_constant, pointer)


def lower(node: Node, t: Tensors, target: Target) -> Lowered:
    qkv, q = t[node.inputs["qkv"]], t[node.outputs["q"]]
    h, kvh, hd = node.attrs["num_heads"], node.attrs["num_kv_heads"], node.attrs["head_dim"]
    g, tm = h // kvh, target.rows_per_tile
    rows = tile_rows(qkv, tm)
    kcache, vcache = node.outputs["k_cache"], node.outputs["v_cache"]
    page_size = t[kcache].shape[1]
    q_cols = lambda c: (c[1] * g * hd, (c[1] + 1) * g * hd)  # noqa: E731
    k_cols = lambda c: ((h + c[1]) * hd, (h + c[1] + 1) * hd)  # noqa: E731
    v_cols = lambda c: ((h + kvh + c[1]) * hd, (h + kvh + c[1] + 1) * hd)  # noqa: E731
    slot = lambda c, b: (Seg(SLOTS_OF_ROWTILE, c[0]), (0, page_size),  # noqa: E731
                         (c[1], c[1] + 1), (0, hd))
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
    cost = lambda c, b: Cost(0, length(rows(c[0], b)) * (g + 2) * hd * 2 * 2,  # noqa: E731
                             length(rows(c[0], b)) * (g + 1) * hd * 8)
    tile = {"TM": tm, "G": g, "HD": hd, "qk_norm": "q_norm" in node.inputs}
    return Lowered((TaskGrid(node.name, "rope_append", node, (ceildiv(qkv.shape[0], tm), kvh),
                             ("row_tile", "kv_head"), tile, tuple(acc), cost),))


def twin(g: TaskGrid, c: tuple[int, ...], s: Step) -> None:
    b, node, a = s.buffers, g.node, g.node.attrs
    rows = s.rows(g, node.inputs["qkv"], c[0])
    if not len(rows):
        return
    h, kvh, hd, gs = a["num_heads"], a["num_kv_heads"], a["head_dim"], g.tile["G"]
    heads = coord_run(c[1])                      # KV heads: one, or a grouped run of them
    h0, h1, nh = heads.start, heads.stop, len(heads)
    qkv = b[node.inputs["qkv"]][row_slice(rows)]
    dt = qkv.dtype
    q = qkv[:, h0 * gs * hd:h1 * gs * hd].reshape(len(rows), nh * gs, hd)
    k = qkv[:, (h + h0) * hd:(h + h1) * hd].reshape(len(rows), nh, hd)
    v = qkv[:, (h + kvh + h0) * hd:(h + kvh + h1) * hd].reshape(len(rows), nh, hd)
    if "q_norm" in node.inputs:
        q = rms_norm(q, b[node.inputs["q_norm"]], a["eps"])
        k = rms_norm(k, b[node.inputs["k_norm"]], a["eps"])
    key = ("rope", node.inputs["positions"], node.inputs["inv_freq"], rows.start, rows.stop, dt)
    if key not in s.memo:       # the same for every KV head and layer of the step
        pos = b[node.inputs["positions"]][row_slice(rows)].float()
        angles = pos[:, None] * b[node.inputs["inv_freq"]][None, :]
        s.memo[key] = (torch.cat([angles.cos()] * 2, -1).to(dt)[:, None, :].float(),
                       torch.cat([angles.sin()] * 2, -1).to(dt)[:, None, :].float())
    cos, sin = s.memo[key]

    def rotate(x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x[..., :hd // 2], x[..., hd // 2:]
        rotated = torch.cat([-x2, x1], -1)
        return (x.float() * cos + rotated.float() * sin).to(dt)

    b[node.outputs["q"]][row_slice(rows), h0 * gs * hd:h1 * gs * hd] = \
        rotate(q).reshape(len(rows), nh * gs * hd)
    slots = b[node.inputs["slots"]][row_slice(rows)].long()
    kc, vc = b[node.outputs["k_cache"]], b[node.outputs["v_cache"]]
    page_size = kc.shape[1]
    # NOTE: a padding token (slot -1) writes no cache slot, as on the GPU.
    kept = slots >= 0
    slots = slots[kept]
    kc[slots // page_size, slots % page_size, h0:h1] = rotate(k)[kept]
    vc[slots // page_size, slots % page_size, h0:h1] = v[kept]


def cuda(grid: TaskGrid, program: Program) -> tuple[str, list[Arg]]:
    ins, outs, tile, attrs = grid.node.inputs, grid.node.outputs, grid.tile, grid.node.attrs
    null = constant("const bf16*", "nullptr")
    return (f"RopeKvAppendTask<{tile['HD']}, {tile['G']}, {str(tile['qk_norm']).lower()}>",
            [pointer("const bf16*", ins["qkv"]),
             pointer("const bf16*", ins["q_norm"]) if "q_norm" in ins else null,
             pointer("const bf16*", ins["k_norm"]) if "k_norm" in ins else null,
             pointer("const float*", ins["inv_freq"]), pointer("bf16*", outs["q"]),
             pointer("bf16*", outs["k_cache"]), pointer("bf16*", outs["v_cache"]),
             constant("int", attrs["num_kv_heads"]), float_constant(attrs["eps"])])


PAGE_SIZE = 16


def _inv_freq(shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    half = shape[0]
    return 1.0 / (500000.0 ** (torch.arange(0, 2 * half, 2, dtype=torch.float32) / (2 * half)))


def cases() -> tuple[TemplateCase, ...]:
    """head_dim 64 and 128, with and without q/k norm; 1 to 64 tokens at random positions
    and slots, the second token padding (slot -1: no cache write)."""
    rng = random.Random(0)
    out = []
    for hd, g, qk_norm in ((64, 4, False), (128, 4, True)):
        kvh, pages = 2, 16
        h = g * kvh
        tensors = {"qkv": activation(TOKENS, (h + 2 * kvh) * hd),
                   "positions": step_input(TOKENS), "slot_mapping": step_input(TOKENS),
                   "inv_freq": weight(hd // 2, dtype=DType.F32),
                   "q": activation(TOKENS, h * hd),
                   "k_cache": state(pages, PAGE_SIZE, kvh, hd),
                   "v_cache": state(pages, PAGE_SIZE, kvh, hd)}
        inputs = {"qkv": "qkv", "positions": "positions", "slots": "slot_mapping",
                  "inv_freq": "inv_freq"}
        if qk_norm:
            tensors |= {"q_norm": weight(hd), "k_norm": weight(hd)}
            inputs |= {"q_norm": "q_norm", "k_norm": "k_norm"}
        graph = one_op(OpKind.ROPE_APPEND, {"T": 128}, tensors, inputs,
                       {"q": "q", "k_cache": "k_cache", "v_cache": "v_cache"},
                       num_heads=h, num_kv_heads=kvh, head_dim=hd, eps=1e-6)
        steps = []
        for t in (1, 5, 16, 64):
            slots = rng.sample(range(pages * PAGE_SIZE), t)
            if t > 1:
                slots[1] = -1
            positions = tuple(rng.randrange(100000) for _ in range(t))
            steps.append(CaseStep(t, inputs={"positions": positions,
                                             "slot_mapping": tuple(slots)}, rows=t))
        out.append(TemplateCase(f"rope_hd{hd}_g{g}_qknorm{qk_norm}", graph, Target(),
                                tuple(steps), fills={"inv_freq": _inv_freq},
                                exact=frozenset({"v_cache"})))
    return tuple(out)


ROPE_APPEND = TaskType("rope_append", twin, cuda, "tasks/rope_kv_append.cuh",
                       OpKind.ROPE_APPEND, lower, cases, group_axis=1)
