"""Gather rows: ``out[s, :] = x[index[s], :]`` (the last token of each sequence), one task
per column tile."""
from __future__ import annotations

import math

from eventkernel.ir.graph import Node, OpKind
from eventkernel.ir.symbols import SEQS, TOKENS, evaluate
from eventkernel.lower.grid import Access, Cost, Program, TaskGrid
from eventkernel.lower.rules import Target, elementwise_tile
from eventkernel.tasks.cases import CaseStep, TemplateCase, activation, one_op, step_input
from eventkernel.tasks.common import Step, length, span
from eventkernel.tasks.task_type import Arg, Lowered, TaskType, Tensors, constant, pointer


def lower(node: Node, t: Tensors, target: Target) -> Lowered:
    x, index, out = t[node.inputs["x"]], t[node.inputs["index"]], t[node.outputs["out"]]
    d = x.shape[1]
    tc = elementwise_tile(d, target)
    cols = lambda c: span(c[0] * tc, c[0] * tc + tc, d)  # noqa: E731
    acc = (Access(x.name, "r", lambda c, b: ((0, evaluate(x.shape[0], b)), cols(c)),
                  "rows named by logits_indices (data-dependent)"),
           Access(index.name, "r", lambda c, b: ((0, evaluate(index.shape[0], b)),)),
           Access(out.name, "w", lambda c, b: ((0, evaluate(out.shape[0], b)), cols(c))))
    cost = lambda c, b: Cost(0, 2 * evaluate(out.shape[0], b) * length(cols(c)) * 2, 0)  # noqa
    return Lowered((TaskGrid(node.name, "gather", node, (math.ceil(d / tc),), ("col_tile",),
                             {"TC": tc, "D": d}, acc, cost),))


def twin(g: TaskGrid, c: tuple[int, ...], s: Step) -> None:
    b, node = s.buffers, g.node
    tc = g.tile["TC"]
    cols = slice(c[0] * tc, c[0] * tc + tc)
    index = b[node.inputs["index"]][:s.num_seqs].long()
    b[node.outputs["out"]][:s.num_seqs, cols] = b[node.inputs["x"]][index, cols]


def cuda(grid: TaskGrid, program: Program) -> tuple[str, list[Arg]]:
    return (f"GatherRowsTask<{grid.tile['TC']}>",
            [pointer("const bf16*", grid.node.inputs["x"]),
             pointer("bf16*", grid.node.outputs["out"]), constant("int", grid.tile["D"])])


def cases() -> tuple[TemplateCase, ...]:
    """5 of 20 rows, one twice; the 2 rows past the step stay."""
    graph = one_op(OpKind.GATHER, {"T": 20, "S": 7},
                   {"x": activation(TOKENS, 2048), "logits_indices": step_input(SEQS),
                    "xs": activation(SEQS, 2048)},
                   {"x": "x", "index": "logits_indices"}, {"out": "xs"})
    step = CaseStep(20, 5, {"logits_indices": (19, 0, 7, 7, 3)}, rows=5)
    return (TemplateCase("gather", graph, Target(), (step,), exact=frozenset({"xs"})),)


GATHER = TaskType("gather", twin, cuda, "tasks/gather_rows.cuh", OpKind.GATHER, lower, cases)
