"""Greedy sampling: ``out[r] = argmax(x[r, :])`` (the first index of the maximum), one row
per task."""
from __future__ import annotations

import torch

from eventkernel.ir.graph import DType, Node, OpKind
from eventkernel.ir.symbols import SEQS, ceildiv
from eventkernel.lower.grid import Access, Cost, Program, TaskGrid
from eventkernel.lower.rules import Target
from eventkernel.tasks.cases import CaseStep, TemplateCase, Variant, activation, one_op
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


def _logits_with_ties(shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    """Random logits whose maximum appears twice per row: the first index must win."""
    rows, vocab = shape
    logits = torch.randn(rows, vocab, generator=gen)
    top = logits.max(dim=1).values + 1.0
    first = torch.randint(0, vocab // 2, (rows,), generator=gen)
    second = first + torch.randint(1, vocab // 2, (rows,), generator=gen)
    logits[torch.arange(rows), first] = top
    logits[torch.arange(rows), second] = top
    return logits


def cases() -> tuple[TemplateCase, ...]:
    """One row per task as lowered, and 64 rows per task; one task past the step."""
    out = []
    for rows, vocab in ((1, 151936), (5, 128256), (64, 1003), (70, 4099)):
        graph = one_op(OpKind.ARGMAX, {"T": 3, "S": rows + 1},
                       {"logits": activation(SEQS, vocab, dtype=DType.F32),
                        "next_tokens": activation(SEQS, dtype=DType.I32)},
                       {"x": "logits"}, {"out": "next_tokens"})
        out.append(TemplateCase(
            f"argmax_{rows}x{vocab}", graph, Target(), (CaseStep(3, rows, rows=rows),),
            fills={"logits": _logits_with_ties}, exact=frozenset({"next_tokens"}),
            variants=(Variant("rows64", ", 1>", ">"),)))
    return tuple(out)


ARGMAX = TaskType("argmax", twin, cuda, "tasks/argmax.cuh", OpKind.ARGMAX, lower, cases)
