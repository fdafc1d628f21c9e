"""Linear: ``out = x @ W.T`` (optionally RMSNorm-ed or gated input, residual added), cut
into (row tile, column tile) tasks; one TN-wide slice of the weight per task."""
from __future__ import annotations

import math

from eventkernel.ir.graph import DType, Node, OpKind
from eventkernel.ir.symbols import Binding, ceildiv
from eventkernel.lower.grid import Access, Cost, Program, TaskGrid
from eventkernel.lower.rules import Target, linear_tile_n
from eventkernel.tasks.common import (Step, length, rms_norm, row_set, row_slice, silu_gate,
                                      span, tile_rows)
from eventkernel.tasks.task_type import (Arg, Lowered, NotOnGpu, TaskType, Tensors, constant,
                                         float_constant, pointer)


def lower(node: Node, t: Tensors, target: Target) -> Lowered:
    x, w, out = t[node.inputs["x"]], t[node.inputs["weight"]], t[node.outputs["out"]]
    n, k = w.shape
    gated = bool(node.attrs.get("gated", False))   # x is [gate | up], 2k wide
    x_width = 2 * k if gated else k
    tm, tn = target.rows_per_tile, linear_tile_n(n, target, k)
    rows = tile_rows(x, tm)
    cols = lambda c: span(c * tn, c * tn + tn, n)  # noqa: E731
    acc = [Access(x.name, "r", lambda c, b: (rows(c[0], b), (0, x_width))),
           Access(w.name, "r", lambda c, b: (cols(c[1]), (0, k)))]
    if "norm" in node.inputs:
        acc.append(Access(node.inputs["norm"], "r", lambda c, b: ((0, k),)))
    if "residual" in node.inputs:
        acc.append(Access(node.inputs["residual"], "r",
                          lambda c, b: (rows(c[0], b), cols(c[1]))))
    acc.append(Access(out.name, "w", lambda c, b: (rows(c[0], b), cols(c[1]))))

    def cost(c: tuple[int, ...], b: Binding) -> Cost:
        m, width = length(rows(c[0], b)), length(cols(c[1]))
        return Cost(width * k * w.dtype.itemsize,
                    m * x_width * x.dtype.itemsize + m * width * out.dtype.itemsize,
                    2 * m * width * k)

    tile = {"TM": tm, "TN": tn, "K": k, "norm": "norm" in node.inputs,
            "residual": "residual" in node.inputs, "gated": gated,
            "out_dtype": out.dtype.value}
    return Lowered((TaskGrid(node.name, "linear", node,
                             (ceildiv(x.shape[0], tm), math.ceil(n / tn)),
                             ("row_tile", "col_tile"), tile, tuple(acc), cost),))


def twin(g: TaskGrid, c: tuple[int, ...], s: Step) -> None:
    b, node = s.buffers, g.node
    rows = row_slice(s.rows(g, node.inputs["x"], c[0]))
    tn = g.tile["TN"]
    w = b[node.inputs["weight"]]
    cols = slice(c[1] * tn, min(w.shape[0], c[1] * tn + tn))
    a = b[node.inputs["x"]][rows]
    if "norm" in node.inputs:
        a = rms_norm(a, b[node.inputs["norm"]], node.attrs["eps"])
    if g.tile["gated"]:
        a = silu_gate(a[:, :w.shape[1]], a[:, w.shape[1]:])
    out = b[node.outputs["out"]]
    acc = a.float() @ w[cols].float().T
    if "residual" in node.inputs:
        acc = b[node.inputs["residual"]][rows, cols].float() + acc.to(out.dtype).float()
    out[rows, cols] = acc.to(out.dtype)


def cuda(grid: TaskGrid, program: Program) -> tuple[str, list[Arg]]:
    # NOTE: code generation runs linears of decode-sized steps through DecodeGemv<...> and
    # GemvMma<...> of the same parameters and Args (the template name after "Linear").
    ins, outs, tile = grid.node.inputs, grid.node.outputs, grid.tile
    out_t = "float" if program.tensors[outs["out"]].dtype is DType.F32 else "bf16"
    n = program.tensors[ins["weight"]].shape[0]
    if n % 8:
        raise NotOnGpu(f"{grid.name}: {n} output features is not a multiple of 8")
    gated = ", true" if tile.get("gated") else ""
    template = (f"LinearTask<{tile['K']}, {tile['TN']}, {out_t}, "
                f"{str(tile['norm']).lower()}, {str(tile['residual']).lower()}, "
                f"{row_set(program, ins['x'])}{gated}>")
    null = constant("const bf16*", "nullptr")
    return template, [
        pointer("const bf16*", ins["weight"]), pointer("const bf16*", ins["x"]),
        pointer("const bf16*", ins["norm"]) if "norm" in ins else null,
        pointer(f"const {out_t}*", ins["residual"]) if "residual" in ins
        else constant(f"const {out_t}*", "nullptr"),
        pointer(f"{out_t}*", outs["out"]), constant("int", n),
        float_constant(grid.node.attrs.get("eps", 0.0))]


LINEAR = TaskType("linear", twin, cuda, "tasks/linear.cuh", OpKind.LINEAR, lower)
