"""Expert linear: ``out[rows of item w] = x[those rows] @ W[expert of w].T`` over the MoE
work items of a step, cut into (work item, column tile) tasks.

The work table (written by the route) gives each item its expert and its run of sorted
rows; the grid's first coordinate runs over items up to the table's bound and its extent
this step is the table's item count (a :class:`RuntimeExtent`): items past it do nothing.
The gate_up linear gathers its input rows by token (``rows`` names them); the down linear
reads the gate_up output by sorted row, gated (``silu(gate) * up``) as it reads it. A
task's rows are part ``w`` of the work table's partition of the sorted rows (a
:class:`Seg`): disjoint between items of one step, data-dependent, and a different
partition in every layer.
"""
from __future__ import annotations

import math

import torch

from eventkernel.ir.graph import DType, Node, OpKind
from eventkernel.ir.symbols import Binding, evaluate
from eventkernel.lower.grid import Access, Cost, Program, RuntimeExtent, Seg, TaskGrid
from eventkernel.lower.rules import Target, linear_tile_n
from eventkernel.tasks.cases import CaseStep, TemplateCase, activation, one_op, weight
from eventkernel.tasks.common import Step, silu_gate, span
from eventkernel.tasks.task_type import (Arg, Lowered, NotOnGpu, TaskType, Tensors, constant,
                                         pointer)


def item_rows(work: str) -> str:
    """The run-time partition of the sorted rows that the work table ``work`` makes."""
    return f"sorted rows of the work items of {work}"


def expert_tile_n(n: int, k: int, top_k: int, target: Target) -> int:
    """Output features per task: a one-token step has ``top_k`` items, and their tasks
    should give each worker about two (larger tiles than a dense linear's: each task's
    fixed cost then buys more bytes). Traced on an H200 (Qwen3-30B-A3B, one token): tiles
    of 16 features made 2,016 expert tasks a layer, 2.5 us each for 64 KB."""
    cols = max(1, 2 * target.num_workers // top_k)
    tile = target.min_tile_n
    while tile < target.max_tile_n and (math.ceil(n / tile) > cols
                                        or k % (16 * 8 // min(tile // 16, 8))):
        tile *= 2
    return tile


def lower(node: Node, t: Tensors, target: Target) -> Lowered:
    x, w, out = t[node.inputs["x"]], t[node.inputs["weight"]], t[node.outputs["out"]]
    work = t[node.inputs["work"]]
    experts, n, k = w.shape
    gated = bool(node.attrs.get("gated", False))
    gather = "rows" in node.inputs
    x_width = 2 * k if gated else k
    per_item, tn = node.attrs["rows_per_item"], expert_tile_n(n, k, node.attrs["top_k"], target)
    space = item_rows(work.name)
    mine = lambda c: Seg(space, c[0])                    # noqa: E731
    cols = lambda c: span(c[1] * tn, c[1] * tn + tn, n)  # noqa: E731
    whole = lambda tensor: (lambda c, b: tuple((0, evaluate(d, b))  # noqa: E731
                                               for d in tensor.shape))
    acc = [Access(work.name, "r", whole(work), "the work table (item count, experts, rows)")]
    if gather:
        acc += [Access(node.inputs["rows"], "r", lambda c, b: (mine(c),)),
                Access(x.name, "r", lambda c, b: ((0, evaluate(x.shape[0], b)), (0, x_width)),
                       "token rows routed to the item (data-dependent)")]
    else:
        acc.append(Access(x.name, "r", lambda c, b: (mine(c), (0, x_width))))
    acc += [Access(w.name, "r", lambda c, b: ((0, experts), cols(c), (0, k)),
                   "the item's expert (data-dependent)"),
            Access(out.name, "w", lambda c, b: (mine(c), cols(c)))]

    def cost(c: tuple[int, ...], b: Binding) -> Cost:
        m, width = min(per_item, evaluate(out.shape[0], b)), cols(c)[1] - cols(c)[0]
        return Cost(width * k * w.dtype.itemsize,
                    m * x_width * x.dtype.itemsize + m * width * out.dtype.itemsize,
                    2 * m * width * k)

    items = work.shape[0] - 1
    tile = {"TN": tn, "K": k, "N": n, "E": experts, "gated": gated, "gather": gather}
    grid = TaskGrid(node.name, "expert_linear", node, (items, math.ceil(n / tn)),
                    ("item", "col_tile"), tile, tuple(acc), cost,
                    runtime_extent=RuntimeExtent(axis=0, access=0, index=0))
    return Lowered((grid,), segments={space: items})


def twin(g: TaskGrid, c: tuple[int, ...], s: Step) -> None:
    b, node, tile = s.buffers, g.node, g.tile
    work = b[node.inputs["work"]]
    if c[0] >= int(work[0, 0]):
        return
    expert, first, end = (int(v) for v in work[1 + c[0]])
    if "rows" in node.inputs:
        a = b[node.inputs["x"]][b[node.inputs["rows"]][first:end].long()]
    else:
        a = b[node.inputs["x"]][first:end]
    k, tn = tile["K"], tile["TN"]
    if tile["gated"]:
        a = silu_gate(a[:, :k], a[:, k:])
    cols = slice(c[1] * tn, min(tile["N"], c[1] * tn + tn))
    out = b[node.outputs["out"]]
    out[first:end, cols] = (a.float() @ b[node.inputs["weight"]][expert, cols].float().T
                            ).to(out.dtype)


def cuda(grid: TaskGrid, program: Program) -> tuple[str, list[Arg]]:
    ins, tile = grid.node.inputs, grid.tile
    if tile["N"] % 8 or tile["K"] % 8:
        raise NotOnGpu(f"{grid.name}: {tile['N']} x {tile['K']} is not a multiple of 8")
    if grid.node.attrs["rows_per_item"] > 64:
        raise NotOnGpu(f"{grid.name}: work items of more than 64 rows")
    gated, gather = str(tile["gated"]).lower(), str(tile["gather"]).lower()
    return (f"ExpertLinearTask<{tile['K']}, {tile['TN']}, {gated}, {gather}>",
            [pointer("const bf16*", ins["weight"]), pointer("const bf16*", ins["x"]),
             pointer("const int*", ins["rows"]) if "rows" in ins
             else constant("const int*", "nullptr"),
             pointer("const int*", ins["work"]), pointer("bf16*", grid.node.outputs["out"]),
             constant("int", tile["N"])])


def cases() -> tuple[TemplateCase, ...]:
    """The gate_up (rows gathered) and the down (gated input) of 6 experts, over a work
    table of 9 items (one of 20 rows: run in groups) of which 7 exist: items past the count
    write nothing."""
    experts, rows, top, k = 6, 48, 12, 4
    items = ((0, 0, 3), (1, 3, 4), (2, 4, 24), (2, 24, 30), (4, 30, 31), (5, 31, 40),
             (5, 40, 48))

    def work(shape, gen):
        table = torch.zeros(shape, dtype=torch.int32)
        table[0, 0] = len(items)
        table[1:1 + len(items)] = torch.tensor(items, dtype=torch.int32)
        return table

    def token_rows(shape, gen):
        return torch.randint(0, top, shape, generator=gen, dtype=torch.int32)

    out = []
    for name, k_in, n, gated in (("gate_up", 512, 96, False), ("down", 256, 512, True)):
        tensors = {"x": activation(rows if gated else top, 2 * k_in if gated else k_in),
                   "w": weight(experts, n, k_in), "work": activation(10, 3, dtype=DType.I32),
                   "rows": activation(rows, dtype=DType.I32), "out": activation(rows, n)}
        inputs = {"x": "x", "weight": "w", "work": "work"}
        if not gated:
            inputs["rows"] = "rows"
        graph = one_op(OpKind.EXPERT_LINEAR, {"T": top}, tensors, inputs, {"out": "out"},
                       gated=gated, rows_per_item=20, top_k=k)
        out.append(TemplateCase(f"expert_{name}", graph, Target(), (CaseStep(top, rows=top),),
                                scales={"w": k_in ** -0.5},
                                fills={"work": work, "rows": token_rows}))
    return tuple(out)


EXPERT_LINEAR = TaskType("expert_linear", twin, cuda, "tasks/expert_linear.cuh",
                         OpKind.EXPERT_LINEAR, lower, cases)
