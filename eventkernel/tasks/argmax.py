"""Greedy sampling: ``out[r] = argmax(x[r, :])`` (the first index of the maximum), one row
per task."""
from __future__ import annotations

import torch

from eventkernel.ir.graph import Node, OpKind
from eventkernel.ir.symbols import ceildiv
from eventkernel.lower.grid import Access, Cost, Program, TaskGrid
from eventkernel.lower.rules import Target
from eventkernel.tasks.common import Step, length, row_set, row_slice, tile_rows
from eventkernel.tasks.task_type import Arg, Lowered, TaskType, Tensors, constant, pointer


def lower(node: Node, t: Tensors, target: Target) -> Lowered:
    # One row per task: a row is the whole vocabulary (0.5 MB of fp32 logits for Llama 3),
    # and rows on different SMs reduce in parallel at the very end of the step, where
    # nothing else is left to overlap with (64 rows in one task took 0.84 ms on an H200).
    x, out = t[node.inputs["x"]], t[node.outputs["out"]]
    v, tm = x.shape[1], 1
    rows = tile_rows(x, tm)
    acc = (Access(x.name, "r", lambda c, b: (rows(c[0], b), (0, v))),
           Access(out.name, "w", lambda c, b: (rows(c[0], b),)))
    cost = lambda c, b: Cost(0, length(rows(c[0], b)) * v * 4,  # noqa: E731
                             length(rows(c[0], b)) * v)
    return Lowered((TaskGrid(node.name, "argmax", node, (ceildiv(x.shape[0], tm),),
                             ("row_tile",), {"TM": tm, "V": v}, acc, cost),))


def twin(g: TaskGrid, c: tuple[int, ...], s: Step) -> None:
    b, node = s.buffers, g.node
    rows = row_slice(s.rows(g, node.inputs["x"], c[0]))
    b[node.outputs["out"]][rows] = b[node.inputs["x"]][rows].argmax(-1).to(torch.int32)


def cuda(grid: TaskGrid, program: Program) -> tuple[str, list[Arg]]:
    ins = grid.node.inputs
    return (f"ArgmaxTask<{row_set(program, ins['x'])}, {grid.tile['TM']}>",
            [pointer("const float*", ins["x"]), constant("int", grid.tile["V"]),
             pointer("int*", grid.node.outputs["out"]), constant("float*", "nullptr")])


ARGMAX = TaskType("argmax", twin, cuda, "tasks/argmax.cuh", OpKind.ARGMAX, lower)
