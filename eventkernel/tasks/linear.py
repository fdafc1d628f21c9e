"""Linear: ``out = x @ W.T`` (optionally RMSNorm-ed or gated input, residual added), cut
into (row tile, column tile) tasks; one TN-wide slice of the weight per task."""
from __future__ import annotations

import math

from eventkernel.ir.graph import DType, Node, OpKind
from eventkernel.ir.symbols import SEQS, TOKENS, Binding, ceildiv
from eventkernel.lower.grid import Access, Cost, Program, TaskGrid
from eventkernel.lower.rules import Target, linear_tile_n
from eventkernel.tasks.cases import (CaseStep, TemplateCase, Variant, activation, one_op,
                                     weight)
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


# (name, K, TN, fp32 output, input: "x" | "norm" (fused RMSNorm) | "gated" ([gate | up],
#  2K wide: silu(gate) * up), residual (in place: out += x @ W.T), rows per sequence)
TEMPLATE_CASES = (
    ("lin_k256_tn16_norm", 256, 16, False, "norm", False, False),
    ("lin_k512_tn32_res", 512, 32, False, "x", True, False),
    ("lin_k512_tn32_gated_res", 512, 32, False, "gated", True, False),
    ("lin_k2048_tn64_norm_res", 2048, 64, False, "norm", True, False),
    ("lin_k2048_tn64_gated_res", 2048, 64, False, "gated", True, False),
    ("lin_k2048_tn128_f32", 2048, 128, True, "x", False, False),
    ("lin_k1024_tn256_norm", 1024, 256, False, "norm", False, False),
    ("lin_k1024_tn512_f32_res", 1024, 512, True, "x", True, False),
    ("lin_k4096_tn128_seqs", 4096, 128, True, "norm", False, True),
    # 4 rows of K = 12288 fit staged: GemvMmaTask reads the rows from global memory (direct)
    ("lin_k12288_tn16_res", 12288, 16, False, "x", True, False),
)


def gemv_max_rows(k: int) -> int:
    """GemvTask::kMaxRows: the rows of K bf16 that fit staged in 160 KB (16, 8 or 4)."""
    return next((r for r in (16, 8) if k * 2 * r <= 160 * 1024), 4)


def cases() -> tuple[TemplateCase, ...]:
    """Every TN, fused norm, gated input, residual, fp32 output, rows per sequence; 1 to
    100 rows (one row tile past the step) through LinearTask, GemvMmaTask (in groups of
    16 rows), and GemvTask (decode-sized steps it stages)."""
    out = []
    for name, k, tn, fp32, kind, residual, per_seq in TEMPLATE_CASES:
        n = 3 * tn + 24 if tn >= 64 else 4 * tn   # a partial last column tile when TN >= 64
        rows = SEQS if per_seq else TOKENS
        dtype = DType.F32 if fp32 else DType.BF16
        tensors = {"x": activation(rows, 2 * k if kind == "gated" else k),
                   "w": weight(n, k), "out": activation(rows, n, dtype=dtype)}
        inputs = {"x": "x", "weight": "w"}
        if kind == "norm":
            tensors["g"], inputs["norm"] = weight(k), "g"
        if residual:
            inputs["residual"] = "out"
        graph = one_op(OpKind.LINEAR, {"T": 160, "S": 160}, tensors, inputs, {"out": "out"},
                       eps=1e-6, gated=kind == "gated")
        steps = tuple(CaseStep(7, t, rows=t) if per_seq else CaseStep(t, rows=t)
                      for t in (1, 2, 3, 5, 8, 16, 64, 100))
        variants = (Variant("gemv_mma", "LinearTask<", "GemvMmaTask<"),
                    Variant("gemv", "LinearTask<", "GemvTask<", min(16, gemv_max_rows(k))))
        target = Target(min_tile_n=tn, max_tile_n=tn)      # this TN whatever N is
        out.append(TemplateCase(name, graph, target, steps, scales={"w": k ** -0.5},
                                variants=variants))
    return tuple(out)


LINEAR = TaskType("linear", twin, cuda, "tasks/linear.cuh", OpKind.LINEAR, lower, cases)
