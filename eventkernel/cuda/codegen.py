"""Code generation: the megakernel source for a compiled program.

The runtime (the persistent loop, entry fetch, waits and notifies, L2 look-ahead, trace
records) is C++ in ``include/runtime/``; this module emits only tables and the dispatch:
the tuning constants, the pointer table, one instantiation per distinct task template
("kind") with its per-grid buffer table (``__constant__``, indexed by the task
descriptor's ``slot``, so the generated code does not grow with the number of layers) and
``kindN_args()``, and a switch over kinds that calls ``Runner<KindN>`` (runtime/runner.cuh:
which task runs a kind, its L2 prefetch, its shared memory). Host/device structs are
declared once in :mod:`eventkernel.cuda.wire`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from eventkernel.ir.graph import DType, TensorKind
from eventkernel.ir.symbols import SEQS, Expr
from eventkernel.lower.grid import Program, TaskGrid
from eventkernel.cuda.tuning import KernelTuning


POINTER_TABLE = "ek_buffers"   # the __constant__ table of buffer pointers the host fills


class UnsupportedOnGpu(ValueError):
    """The program uses something the CUDA backend does not implement."""


@dataclass(frozen=True)
class Field:
    """One member of a task's Args: a buffer pointer (by tensor name) or a constant."""

    c_type: str
    tensor: str | None = None
    value: str | None = None


@dataclass(frozen=True)
class Kind:
    template: str                     # e.g. "LinearTask<2048, 16, bf16, true, false>"
    fields: tuple[str, ...]           # C types of the Args members, in order
    index: int


def _rows(program: Program, tensor: str) -> str:
    dim0 = program.tensors[tensor].shape[0]
    is_seqs = isinstance(dim0, Expr) and SEQS.args[0] in dim0.symbols
    return "RowSet::kSeqs" if is_seqs else "RowSet::kTokens"


def instantiate(grid: TaskGrid, program: Program) -> tuple[str, list[Field]]:
    """The template instantiation and Args fields of one task grid."""
    node, tile, t = grid.node, grid.tile, grid.task_type
    ins, outs, attrs = node.inputs, node.outputs, node.attrs
    ptr = lambda ty, name: Field(ty, tensor=name)  # noqa: E731
    null = Field("const bf16*", value="nullptr")
    if t == "embedding":
        return (f"EmbeddingTask<{tile['TC']}>",
                [ptr("const bf16*", ins["table"]), ptr("bf16*", outs["out"]),
                 Field("int", value=str(tile["D"]))])
    if t == "linear":
        out_f32 = program.tensors[outs["out"]].dtype is DType.F32
        out_t = "float" if out_f32 else "bf16"
        n = program.tensors[ins["weight"]].shape[0]
        if n % 8:
            raise UnsupportedOnGpu(f"{grid.name}: {n} output features is not a multiple of 8")
        gated = ", true" if tile.get("gated") else ""
        template = (f"LinearTask<{tile['K']}, {tile['TN']}, {out_t}, "
                    f"{str(tile['norm']).lower()}, {str(tile['residual']).lower()}, "
                    f"{_rows(program, ins['x'])}{gated}>")
        return template, [
            ptr("const bf16*", ins["weight"]), ptr("const bf16*", ins["x"]),
            ptr("const bf16*", ins["norm"]) if "norm" in ins else null,
            ptr(f"const {out_t}*", ins["residual"]) if "residual" in ins
            else Field(f"const {out_t}*", value="nullptr"),
            ptr(f"{out_t}*", outs["out"]), Field("int", value=str(n)),
            Field("float", value=repr(float(attrs.get("eps", 0.0))) + "f")]
    if t == "rope_append":
        return (f"RopeKvAppendTask<{tile['HD']}, {tile['G']}, {str(tile['qk_norm']).lower()}>",
                [ptr("const bf16*", ins["qkv"]),
                 ptr("const bf16*", ins["q_norm"]) if "q_norm" in ins else null,
                 ptr("const bf16*", ins["k_norm"]) if "k_norm" in ins else null,
                 ptr("const float*", ins["inv_freq"]), ptr("bf16*", outs["q"]),
                 ptr("bf16*", outs["k_cache"]), ptr("bf16*", outs["v_cache"]),
                 Field("int", value=str(attrs["num_kv_heads"])),
                 Field("float", value=repr(float(attrs["eps"])) + "f")])
    max_tokens = str(program.maxima["T"])
    if t == "attention":
        return (f"AttentionTask<{tile['HD']}, {tile['G']}>",
                [ptr("const bf16*", ins["q"]), ptr("const bf16*", ins["k_cache"]),
                 ptr("const bf16*", ins["v_cache"]), ptr("float*", "attn_partial"),
                 ptr("float*", "attn_lse"), Field("int", value=str(attrs["num_kv_heads"])),
                 Field("int", value=str(tile["page_size"])),
                 Field("int", value=str(tile["splits"])), Field("int", value=max_tokens),
                 Field("float", value=repr(1.0 / math.sqrt(tile["HD"])) + "f")])
    if t == "attn_merge":
        return (f"AttentionMergeTask<{tile['HD']}, {tile['G']}>",
                [ptr("const float*", "attn_partial"), ptr("const float*", "attn_lse"),
                 ptr("bf16*", outs["out"]), Field("int", value=str(attrs["num_kv_heads"])),
                 Field("int", value=str(tile["splits"])), Field("int", value=max_tokens)])
    if t == "silu_mul":
        return (f"SiluMulTask<{tile['TC']}>",
                [ptr("const bf16*", ins["x"]), ptr("bf16*", outs["out"]),
                 Field("int", value=str(tile["I"]))])
    if t == "gather":
        return (f"GatherRowsTask<{tile['TC']}>",
                [ptr("const bf16*", ins["x"]), ptr("bf16*", outs["out"]),
                 Field("int", value=str(tile["D"]))])
    if t == "argmax":
        return (f"ArgmaxTask<{_rows(program, ins['x'])}, {tile['TM']}>",
                [ptr("const float*", ins["x"]), Field("int", value=str(tile["V"])),
                 ptr("int*", outs["out"]), Field("float*", value="nullptr")])
    raise UnsupportedOnGpu(f"no CUDA template for task type {t!r} ({grid.name})")


@dataclass(frozen=True)
class KernelSource:
    source: str
    buffers: tuple[str, ...]                 # buffer index -> tensor name
    kinds: tuple[str, ...]                   # kind index -> template
    grid_kind: tuple[tuple[int, int], ...]   # grid index -> (kind, slot)
    num_smem_entries: int                    # ek_smem_sizes writes this many ints


def generate(program: Program, *, trace: bool = False,
             tuning: KernelTuning = KernelTuning()) -> KernelSource:
    """The megakernel source for ``program``; ``trace`` compiles in per-task timestamps
    (the EK_TRACE mode), ``tuning`` the kernel's tuning constants."""
    for name, tensor in program.tensors.items():
        if tensor.kind is TensorKind.WEIGHT and tensor.dtype is DType.F32 and \
                name != "rope_inv_freq":
            raise UnsupportedOnGpu("the CUDA backend runs bf16 weights; compile with dtype bf16")
    buffers = tuple(program.tensors)
    index = {name: i for i, name in enumerate(buffers)}
    kinds: dict[str, list] = {}
    grid_kind = []
    templates: list[str] = []
    for grid in program.grids:
        template, fields = instantiate(grid, program)
        # NOTE: grids share a kind when the template and every constant field agree.
        key = template + "|" + ",".join(f.value for f in fields if f.tensor is None)
        if key not in kinds:
            templates.append(template)
        slots = kinds.setdefault(key, [])
        grid_kind.append((list(kinds).index(key), len(slots)))
        slots.append(fields)
    parts = ["// Generated by eventkernel.cuda.codegen: the megakernel of one compiled model.",
             tuning.c_declarations(),
             "#define EK_TRACE" if trace else "",
             '#include "eventkernel.cuh"', "using namespace ek;", "",
             "/// Every tensor's device pointer, by buffer index, written by the host at load",
             "/// (constant memory: event acquires do not evict it as they do the L1 cache).",
             f"__constant__ void* {POINTER_TABLE}[{len(buffers)}];", ""]
    for k, (template, slots) in enumerate(zip(templates, kinds.values())):
        parts.append(_kind_table(k, template, slots, index))
    parts.append(_dispatch(len(templates)))
    parts.append('#include "runtime/megakernel.cuh"')
    return KernelSource("\n".join(parts), buffers, tuple(templates), tuple(grid_kind),
                        len(templates))


def _kind_table(k: int, template: str, slots: list[list[Field]], index: dict[str, int]) -> str:
    """``using KindK``, its per-slot buffer table and ``kindK_args(slot)``."""
    ptr_cols = [i for i, f in enumerate(slots[0]) if f.tensor is not None]
    lines = [f"// kind {k}: {len(slots)} grid(s)", f"using Kind{k} = {template};"]
    if ptr_cols:
        rows = ", ".join("{" + ", ".join(str(index[s[i].tensor]) for i in ptr_cols) + "}"
                         for s in slots)
        lines.append(f"__constant__ int kKind{k}Buffers[{len(slots)}][{len(ptr_cols)}] = "
                     f"{{{rows}}};")
    members = []
    col = 0
    for f in slots[0]:
        if f.tensor is not None:
            pointer = f"{POINTER_TABLE}[kKind{k}Buffers[slot][{col}]]"
            members.append(f"static_cast<{f.c_type}>({pointer})")
            col += 1
        else:
            members.append(f"static_cast<{f.c_type}>({f.value})")
    lines.append(f"__device__ __forceinline__ Kind{k}::Args kind{k}_args(int slot) {{\n"
                 f"    return Kind{k}::Args{{{', '.join(members)}}};\n}}\n")
    return "\n".join(lines)


def _dispatch(num_kinds: int) -> str:
    """The switch over kinds that runtime/megakernel.cuh calls, and the kinds' smem."""
    kinds = range(num_kinds)
    run = "\n".join(f"        case {k}: ok = Runner<Kind{k}>::run(kind{k}_args(d.slot), shape, x, "
                    f"e, bt, counters, dbg, smem); break;" for k in kinds)
    prefetch = "\n".join(f"        case {k}: Runner<Kind{k}>::l2_prefetch(kind{k}_args(d.slot), "
                         f"shape, d); break;" for k in kinds)
    smem = ", ".join(f"Runner<Kind{k}>::kSmemBytes" for k in kinds)
    return f"""/// The kinds' dispatch (runtime/megakernel.cuh calls it).
constexpr int kNumKinds = {num_kinds};
__constant__ int ek_kind_smem_bytes[kNumKinds] = {{{smem}}};

/// Runs queue entry ``e`` (all threads); false when a debug build's wait stopped.
__device__ __forceinline__ bool ek_run_entry(const TaskDesc& d, const Entry& x, int e,
                                             const StepShape& shape, const BucketTables& bt,
                                             int* counters, DebugState* dbg, char* smem) {{
    bool ok = true;
    switch (d.kind) {{
{run}
        default: ok = false;
    }}
    return ok;
}}

/// One thread: ask L2 for the weights of queue entry ``d`` (weights never wait on events).
__device__ __forceinline__ void ek_l2_prefetch_entry(const TaskDesc& d, const StepShape& shape) {{
    switch (d.kind) {{
{prefetch}
        default: break;
    }}
}}
"""
