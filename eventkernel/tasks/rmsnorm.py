"""RMSNorm of whole rows, one task per row tile (when it is not fused into a linear)."""
from __future__ import annotations

from eventkernel.ir.graph import Node, OpKind
from eventkernel.ir.symbols import TOKENS, ceildiv
from eventkernel.lower.grid import Access, Cost, Program, TaskGrid
from eventkernel.lower.rules import Target
from eventkernel.tasks.cases import CaseStep, TemplateCase, activation, one_op, weight
from eventkernel.tasks.common import Step, length, rms_norm, row_set, row_slice, tile_rows
from eventkernel.tasks.task_type import (Arg, Lowered, TaskType, Tensors, constant,
                                         float_constant, pointer)


def lower(node: Node, t: Tensors, target: Target) -> Lowered:
    x, out = t[node.inputs["x"]], t[node.outputs["out"]]
    d, tm = x.shape[1], target.rows_per_tile
    rows = tile_rows(x, tm)
    acc = (Access(x.name, "r", lambda c, b: (rows(c[0], b), (0, d))),
           Access(node.inputs["weight"], "r", lambda c, b: ((0, d),)),
           Access(out.name, "w", lambda c, b: (rows(c[0], b), (0, d))))
    cost = lambda c, b: Cost(d * 2, 2 * length(rows(c[0], b)) * d * x.dtype.itemsize,  # noqa
                             4 * length(rows(c[0], b)) * d)
    return Lowered((TaskGrid(node.name, "rmsnorm", node, (ceildiv(x.shape[0], tm),),
                             ("row_tile",), {"TM": tm, "D": d}, acc, cost),))


def twin(g: TaskGrid, c: tuple[int, ...], s: Step) -> None:
    b, node = s.buffers, g.node
    rows = row_slice(s.rows(g, node.inputs["x"], c[0]))
    b[node.outputs["out"]][rows] = rms_norm(b[node.inputs["x"]][rows],
                                            b[node.inputs["weight"]], node.attrs["eps"])


def cuda(grid: TaskGrid, program: Program) -> tuple[str, list[Arg]]:
    # NOTE: the decoders fuse every RMSNorm into the linear that reads it; this binding
    # serves an unfused one (and the template tests).
    ins, outs = grid.node.inputs, grid.node.outputs
    return (f"RmsNormTask<{row_set(program, ins['x'])}>",
            [pointer("const bf16*", ins["x"]), pointer("const bf16*", ins["weight"]),
             pointer("bf16*", outs["out"]), constant("int", grid.tile["D"]),
             float_constant(grid.node.attrs["eps"])])


def cases() -> tuple[TemplateCase, ...]:
    graph = one_op(OpKind.RMSNORM, {"T": 160},
                   {"x": activation(TOKENS, 2048), "w": weight(2048),
                    "xn": activation(TOKENS, 2048)},
                   {"x": "x", "weight": "w"}, {"out": "xn"}, eps=1e-5)
    steps = tuple(CaseStep(t, rows=t) for t in (1, 5, 16, 64, 100))
    return (TemplateCase("rmsnorm", graph, Target(), steps),)


RMSNORM = TaskType("rmsnorm", twin, cuda, "tasks/rmsnorm.cuh", OpKind.RMSNORM, lower, cases)
