"""SiLU gating of the MLP: ``out = silu(x[:, :I]) * x[:, I:]``, (row tile, column tile)
tasks (when it is not fused into the down projection)."""
from __future__ import annotations

import math

from eventkernel.ir.graph import Node, OpKind
from eventkernel.ir.symbols import TOKENS, ceildiv
from eventkernel.lower.grid import Access, Cost, Program, TaskGrid
from eventkernel.lower.rules import Target, elementwise_tile
from eventkernel.tasks.cases import CaseStep, TemplateCase, activation, one_op
from eventkernel.tasks.common import Step, length, row_slice, silu_gate, span, tile_rows
from eventkernel.tasks.task_type import Arg, Lowered, TaskType, Tensors, constant, pointer


def lower(node: Node, t: Tensors, target: Target) -> Lowered:
    x, out = t[node.inputs["x"]], t[node.outputs["out"]]
    inter, tm = out.shape[1], target.rows_per_tile
    tc = elementwise_tile(inter, target)
    rows = tile_rows(x, tm)
    cols = lambda c, off=0: span(off + c * tc, off + c * tc + tc, off + inter)  # noqa: E731
    acc = (Access(x.name, "r", lambda c, b: (rows(c[0], b), cols(c[1]))),
           Access(x.name, "r", lambda c, b: (rows(c[0], b), cols(c[1], inter))),
           Access(out.name, "w", lambda c, b: (rows(c[0], b), cols(c[1]))))
    cost = lambda c, b: Cost(0, 3 * length(rows(c[0], b)) * length(cols(c[1])) * 2,  # noqa
                             5 * length(rows(c[0], b)) * length(cols(c[1])))
    return Lowered((TaskGrid(node.name, "silu_mul", node,
                             (ceildiv(x.shape[0], tm), math.ceil(inter / tc)),
                             ("row_tile", "col_tile"), {"TM": tm, "TC": tc, "I": inter}, acc,
                             cost),))


def twin(g: TaskGrid, c: tuple[int, ...], s: Step) -> None:
    b, node = s.buffers, g.node
    rows = row_slice(s.rows(g, node.inputs["x"], c[0]))
    tc, inter = g.tile["TC"], g.tile["I"]
    cols = slice(c[1] * tc, min(inter, c[1] * tc + tc))
    x = b[node.inputs["x"]]
    b[node.outputs["out"]][rows, cols] = silu_gate(
        x[rows, cols], x[rows, inter + cols.start:inter + cols.stop])


def cuda(grid: TaskGrid, program: Program) -> tuple[str, list[Arg]]:
    return (f"SiluMulTask<{grid.tile['TC']}>",
            [pointer("const bf16*", grid.node.inputs["x"]),
             pointer("bf16*", grid.node.outputs["out"]), constant("int", grid.tile["I"])])


def cases() -> tuple[TemplateCase, ...]:
    graph = one_op(OpKind.SILU_MUL, {"T": 160},
                   {"gate_up": activation(TOKENS, 2 * 768), "h": activation(TOKENS, 768)},
                   {"x": "gate_up"}, {"out": "h"})
    steps = tuple(CaseStep(t, rows=t) for t in (1, 5, 16, 64, 100))
    return (TemplateCase("silu_mul", graph, Target(), steps, scales={"gate_up": 2.0}),)


SILU_MUL = TaskType("silu_mul", twin, cuda, "tasks/silu_mul.cuh", OpKind.SILU_MUL, lower,
                    cases)
