"""Embedding: ``out[t, :] = table[ids[t], :]``, cut into (row tile, column tile) tasks."""
from __future__ import annotations

import math
import random

from eventkernel.ir.graph import Node, OpKind
from eventkernel.ir.symbols import TOKENS, ceildiv
from eventkernel.lower.grid import Access, Cost, Program, TaskGrid
from eventkernel.lower.rules import Target, elementwise_tile
from eventkernel.tasks.cases import (CaseStep, TemplateCase, activation, one_op, step_input,
                                     weight)
from eventkernel.tasks.common import Step, length, row_slice, span, tile_rows
from eventkernel.tasks.task_type import Arg, Lowered, TaskType, Tensors, constant, pointer


def lower(node: Node, t: Tensors, target: Target) -> Lowered:
    table, ids, out = t[node.inputs["table"]], t[node.inputs["ids"]], t[node.outputs["out"]]
    d = out.shape[1]
    tm, tc = target.rows_per_tile, elementwise_tile(d, target)
    rows = tile_rows(out, tm)
    cols = lambda c: span(c * tc, c * tc + tc, d)  # noqa: E731
    acc = (Access(ids.name, "r", lambda c, b: (rows(c[0], b),)),
           Access(table.name, "r", lambda c, b: ((0, table.shape[0]), cols(c[1])),
                  "rows chosen by the token ids"),
           Access(out.name, "w", lambda c, b: (rows(c[0], b), cols(c[1]))))
    cost = lambda c, b: Cost(  # noqa: E731
        length(rows(c[0], b)) * length(cols(c[1])) * table.dtype.itemsize,
        length(rows(c[0], b)) * length(cols(c[1])) * out.dtype.itemsize, 0)
    return Lowered((TaskGrid(node.name, "embedding", node,
                             (ceildiv(out.shape[0], tm), math.ceil(d / tc)),
                             ("row_tile", "col_tile"), {"TM": tm, "TC": tc, "D": d}, acc,
                             cost),))


def twin(g: TaskGrid, c: tuple[int, ...], s: Step) -> None:
    b, node = s.buffers, g.node
    rows = s.rows(g, node.outputs["out"], c[0])
    tc = g.tile["TC"]
    cols = slice(c[1] * tc, c[1] * tc + tc)
    ids = b[node.inputs["ids"]][row_slice(rows)].long()
    b[node.outputs["out"]][row_slice(rows), cols] = b[node.inputs["table"]][ids, cols]


def cuda(grid: TaskGrid, program: Program) -> tuple[str, list[Arg]]:
    ins, outs = grid.node.inputs, grid.node.outputs
    return (f"EmbeddingTask<{grid.tile['TC']}>",
            [pointer("const bf16*", ins["table"]), pointer("bf16*", outs["out"]),
             constant("int", grid.tile["D"])])


def cases() -> tuple[TemplateCase, ...]:
    """1 to 100 tokens (the last row tile partial, one row tile past the step)."""
    rng = random.Random(0)
    graph = one_op(OpKind.EMBEDDING, {"T": 160},
                   {"table": weight(1000, 512), "tokens": step_input(TOKENS),
                    "x": activation(TOKENS, 512)},
                   {"table": "table", "ids": "tokens"}, {"out": "x"})
    steps = tuple(CaseStep(t, inputs={"tokens": tuple(rng.randrange(1000) for _ in range(t))},
                           rows=t) for t in (1, 5, 16, 64, 100))
    return (TemplateCase("embedding", graph, Target(), steps, exact=frozenset({"x"})),)


EMBEDDING = TaskType("embedding", twin, cuda, "tasks/embedding.cuh", OpKind.EMBEDDING, lower,
                     cases)
