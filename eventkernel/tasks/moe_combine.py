"""MoE combine: each token's weighted sum of its experts' outputs, added to the residual
stream in place; (row tile, column tile) tasks.

transformers sums a token's experts in expert order, rounding each product and each partial
sum to the activation dtype, then adds the residual; this does the same. The sorted rows are
in expert order, so a token's rows in ascending order are its experts in ascending order.
"""
from __future__ import annotations

import math

import torch

from eventkernel.ir.graph import DType, Node, OpKind
from eventkernel.ir.symbols import TOKENS, Binding, ceildiv, evaluate
from eventkernel.lower.grid import Access, Cost, Program, TaskGrid
from eventkernel.lower.rules import Target, elementwise_tile
from eventkernel.tasks.cases import CaseStep, TemplateCase, activation, one_op
from eventkernel.tasks.common import Step, length, row_slice, span, tile_rows
from eventkernel.tasks.task_type import (Arg, Lowered, NotOnGpu, TaskType, Tensors, constant,
                                         pointer)


def lower(node: Node, t: Tensors, target: Target) -> Lowered:
    y, pos, out = t[node.inputs["y"]], t[node.inputs["pos"]], t[node.outputs["out"]]
    d, k, tm = out.shape[1], node.attrs["top_k"], target.rows_per_tile
    tc = elementwise_tile(d, target)
    rows = tile_rows(out, tm)
    cols = lambda c: span(c[1] * tc, c[1] * tc + tc, d)  # noqa: E731
    acc = (Access(y.name, "r", lambda c, b: ((0, evaluate(y.shape[0], b)), cols(c)),
                  "the sorted rows of the tile's tokens (data-dependent)"),
           Access(pos.name, "r", lambda c, b: (rows(c[0], b), (0, k))),
           Access(node.inputs["weights"], "r", lambda c, b: (rows(c[0], b), (0, k))),
           Access(node.inputs["residual"], "r", lambda c, b: (rows(c[0], b), cols(c))),
           Access(out.name, "w", lambda c, b: (rows(c[0], b), cols(c))))

    def cost(c: tuple[int, ...], b: Binding) -> Cost:
        m, width = length(rows(c[0], b)), length(cols(c))
        return Cost(0, (k + 2) * m * width * out.dtype.itemsize, 2 * k * m * width)

    return Lowered((TaskGrid(node.name, "moe_combine", node,
                             (ceildiv(out.shape[0], tm), math.ceil(d / tc)),
                             ("row_tile", "col_tile"), {"TM": tm, "TC": tc, "D": d, "K": k},
                             acc, cost),))


def twin(g: TaskGrid, c: tuple[int, ...], s: Step) -> None:
    b, node = s.buffers, g.node
    rows = row_slice(s.rows(g, node.outputs["out"], c[0]))
    tc = g.tile["TC"]
    cols = slice(c[1] * tc, min(g.tile["D"], c[1] * tc + tc))
    out = b[node.outputs["out"]]
    pos, order = torch.sort(b[node.inputs["pos"]][rows].long(), dim=1)
    weights = torch.gather(b[node.inputs["weights"]][rows], 1, order).to(out.dtype)
    y = b[node.inputs["y"]]
    total = torch.zeros((rows.stop - rows.start, cols.stop - cols.start), dtype=out.dtype)
    for j in range(g.tile["K"]):
        total += y[pos[:, j], cols] * weights[:, j, None]
    out[rows, cols] = b[node.inputs["residual"]][rows, cols] + total


def cuda(grid: TaskGrid, program: Program) -> tuple[str, list[Arg]]:
    ins, tile = grid.node.inputs, grid.tile
    if grid.node.outputs["out"] != ins["residual"]:
        raise NotOnGpu(f"{grid.name}: the combine template adds into its residual in place")
    return (f"MoeCombineTask<{tile['TC']}, {tile['K']}>",
            [pointer("const bf16*", ins["y"]), pointer("const int*", ins["pos"]),
             pointer("const float*", ins["weights"]), pointer("bf16*", ins["residual"]),
             constant("int", tile["D"])])


def cases() -> tuple[TemplateCase, ...]:
    """Top-4 of 1 to 70 tokens (two row tiles) into a 2048-wide residual."""
    k, top, d = 4, 70, 2048
    tensors = {"y": activation(TOKENS * k, d), "pos": activation(TOKENS, k, dtype=DType.I32),
               "w": activation(TOKENS, k, dtype=DType.F32), "x": activation(TOKENS, d)}
    graph = one_op(OpKind.MOE_COMBINE, {"T": top}, tensors,
                   {"y": "y", "pos": "pos", "weights": "w", "residual": "x"}, {"out": "x"},
                   top_k=k)

    def slots(shape, gen):
        return torch.randperm(shape[0] * shape[1], generator=gen,
                              dtype=torch.int32).reshape(shape)

    def weights(shape, gen):
        return torch.rand(shape, generator=gen).to(torch.bfloat16).float()

    return (TemplateCase("moe_combine", graph, Target(),
                         tuple(CaseStep(t, rows=t) for t in (1, 5, top)),
                         fills={"pos": slots, "w": weights}),)


MOE_COMBINE = TaskType("moe_combine", twin, cuda, "tasks/moe_combine.cuh", OpKind.MOE_COMBINE,
                       lower, cases)
