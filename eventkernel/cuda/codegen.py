"""Code generation: the megakernel source for a compiled program.

The source is the dispatch loop plus one instantiation per distinct task template
("kind"). A kind's per-grid data (which buffers, which sizes) lives in a ``__constant__``
table indexed by the task descriptor's ``slot``, so the generated code does not grow with
the number of layers. Task descriptors, bucket tables and the runtime state are declared
once in :mod:`eventkernel.cuda.wire`.

Two runtimes are generated into one source: the default (linear tasks of decode-sized
steps take ``GemvTask``, their weights prefetched to L2 a few tasks ahead) and, under the
build option ``-DEK_WEIGHT_RING``, the weight ring of ``ring_gemv.cuh`` (each worker streams
the weights of its next linear tasks into shared memory while it waits on events).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from eventkernel.ir.graph import DType, TensorKind
from eventkernel.ir.symbols import SEQS, Expr
from eventkernel.lower.grid import Program, TaskGrid
from eventkernel.cuda.wire import c_declarations


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


def generate(program: Program, *, trace: bool = False) -> KernelSource:
    """The megakernel source for ``program``; ``trace`` compiles in per-task timestamps."""
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
             "#define EK_TRACE" if trace else "",
             '#include "eventkernel.cuh"', "", "namespace ek {", c_declarations(), "}  // namespace ek",
             "using namespace ek;", "",
             "/// Every tensor's device pointer, by buffer index, written by the host at load",
             "/// (constant memory: event acquires do not evict it as they do the L1 cache).",
             f"__constant__ void* {POINTER_TABLE}[{len(buffers)}];", ""]
    dispatch, prefetch, smem_kinds = [], [], []
    ring_dispatch, ring_tiles, ring_fits, ring_asserts = [], [], [], []
    for k, (template, slots) in enumerate(zip(templates, kinds.values())):
        ptr_cols = [i for i, f in enumerate(slots[0]) if f.tensor is not None]
        rows = ", ".join("{" + ", ".join(str(index[s[i].tensor]) for i in ptr_cols) + "}"
                         for s in slots) if ptr_cols else ""
        parts.append(f"// kind {k}: {len(slots)} grid(s)")
        parts.append(f"using Kind{k} = {template};")
        if ptr_cols:
            parts.append(f"__constant__ int kKind{k}Buffers[{len(slots)}][{len(ptr_cols)}] = "
                         f"{{{rows}}};")
        members = []
        col = 0
        for i, f in enumerate(slots[0]):
            if f.tensor is not None:
                pointer = f"{POINTER_TABLE}[kKind{k}Buffers[slot][{col}]]"
                members.append(f"static_cast<{f.c_type}>({pointer})")
                col += 1
            else:
                members.append(f"static_cast<{f.c_type}>({f.value})")
        parts.append(f"__device__ __forceinline__ Kind{k}::Args kind{k}_args(int slot) {{\n"
                     f"    return Kind{k}::Args{{{', '.join(members)}}};\n}}\n")
        ring_run = f"ok = run_task<Kind{k}>(a, shape, d, e, bt, counters, dbg, smem{{}}, ring);"
        if template.startswith("LinearTask<"):
            # NOTE: decode-sized steps take the GEMV path, with weights prefetched to L2.
            # Steps of EK_MMA_GEMV_MIN_ROWS (default 2) to 64 rows take the GEMV on tensor
            # cores (=0: its handles() is constant false and its run is not instantiated);
            # both GEMVs read the same weight tile. DecodeGemv compiles only the row loops
            # the tensor-core path leaves to it: the kernel has 255 registers to share.
            parts.append(f"using Gemv{k} = DecodeGemv{template[len('Linear'):]};")
            parts.append(f"using GemvMma{k} = GemvMma{template[len('Linear'):]};")
            prefetch.append(f"        case {k}: if (Gemv{k}::handles(shape) || "
                            f"GemvMma{k}::handles(shape)) Gemv{k}::l2_prefetch("
                            f"kind{k}_args(d.slot), d.c0, d.c1, d.c2); break;")
            smem_kinds.append(f"Gemv{k}")  # GemvMma{k} stages in the same layout
            dispatch.append(
                f"            case {k}: {{ const auto a = kind{k}_args(d.slot);\n"
                f"#if EK_MMA_GEMV_MIN_ROWS\n"
                f"                if (GemvMma{k}::handles(shape)) {{\n"
                f"                    ok = run_task<GemvMma{k}>(a, shape, x, e, bt, counters, dbg, smem);\n"
                f"                    break;\n"
                f"                }}\n"
                f"#endif\n"
                f"                ok = Gemv{k}::handles(shape)\n"
                f"                    ? run_task<Gemv{k}>(a, shape, x, e, bt, counters, dbg, smem)\n"
                f"                    : run_task<Kind{k}>(a, shape, x, e, bt, counters, dbg, smem);"
                f" }} break;")
            # EK_WEIGHT_RING: every linear of a decode-sized step runs through the worker's
            # weight ring (one GEMV body for all linear kinds); larger steps take the mma
            # template, which may then use the ring's shared memory too.
            ring_tiles.append(
                f"        case {k}: {{\n"
                f"            if (!Kind{k}::active(shape, d.c0, d.c1, d.c2)) return false;\n"
                f"            const auto a = kind{k}_args(d.slot);\n"
                f"            t = ring_tile(a.weight, Kind{k}::kK, Kind{k}::kTileN, a.n, d.c1);\n"
                f"            return t.chunks > 0;\n        }}")
            ring_fits.append(f"ring_rows_fit(Kind{k}::kK, Kind{k}::kFuseNormInput)")
            ring_asserts.append(f"static_assert(Kind{k}::kSmemBytes <= kMaxDynamicSmem, "
                                f"\"kind {k} needs more shared memory than a CTA has\");")
            ring_asserts.append(f"static_assert(Kind{k}::kTileN <= kRingMaxTileN, "
                                f"\"kind {k}: linear tiles wider than the ring GEMV takes\");")
            ring_dispatch.append(
                f"            case {k}: {{ const auto a = kind{k}_args(d.slot);\n"
                f"                if (ring_mode) {{\n"
                f"                    gemv = gemv_params<Kind{k}>(a);\n"
                f"                    tile = ring_tile(a.weight, Kind{k}::kK, Kind{k}::kTileN, "
                f"a.n, d.c1);\n"
                f"                    rows = row_tile(shape, Kind{k}::kRowSet, d.c0);\n"
                f"                    n0 = d.c1 * Kind{k}::kTileN;\n"
                f"                    through_ring = true;\n"
                f"                }} else {{\n                    {ring_run.format('')}\n"
                f"                }} }} break;")
        else:
            dispatch.append(f"            case {k}: ok = run_task<Kind{k}>(kind{k}_args(d.slot), "
                            f"shape, x, e, bt, counters, dbg, smem); break;")
            ring_asserts.append(f"static_assert(Kind{k}::kSmemBytes <= kScratchBytes, "
                                f"\"kind {k} needs more shared memory than the ring leaves\");")
            ring_dispatch.append(f"            case {k}: {{ const auto a = kind{k}_args(d.slot);\n"
                                 f"                {ring_run.format(' + kRingBytes')} }} break;")
        smem_kinds.append(f"Kind{k}")
    smem_lines = "\n".join(f"    out[{i}] = {name}::kSmemBytes;"
                           for i, name in enumerate(smem_kinds))
    fits = "kRingMaxRows"
    for fit in ring_fits:
        fits = f"cmin({fit}, {fits})"
    parts.append(_COMMON)
    parts.append("#ifdef EK_WEIGHT_RING")
    parts.extend(ring_asserts)
    parts.append(f"/// Token rows up to which every linear of this model runs through the ring.\n"
                 f"constexpr int kRingRows = {fits};\n")
    parts.append(_RING_RUNTIME.replace("{DISPATCH}", "\n".join(ring_dispatch))
                 .replace("{RING_TILES}", "\n".join(ring_tiles)))
    parts.append("#else  // the default: GEMV tasks, weights prefetched to L2 ahead of them")
    parts.append(_GEMV_RUNTIME.replace("{DISPATCH}", "\n".join(dispatch))
                 .replace("{PREFETCH}", "\n".join(prefetch)).replace("{SMEM}", smem_lines))
    parts.append("#endif  // EK_WEIGHT_RING")
    return KernelSource("\n".join(parts), buffers, tuple(templates), tuple(grid_kind),
                        len(smem_kinds))


_COMMON = r"""
#ifdef EK_TRACE
__device__ unsigned long long* ek_trace;
#endif

__device__ __forceinline__ unsigned long long global_ns() {
    unsigned long long t;
    asm volatile("mov.u64 %0, %globaltimer;" : "=l"(t));
    return t;
}

__device__ __forceinline__ unsigned sm_id() {
    unsigned id;
    asm volatile("mov.u32 %0, %smid;" : "=r"(id));
    return id;
}

/// All threads, once s_parity is read and shared: this step's counters. Counters of two
/// parities alternate between steps; each step zeroes the parity the next step will use,
/// so the host never resets anything.
__device__ __forceinline__ int* step_counters(const RuntimeState& rt, int parity) {
    int* counters = reinterpret_cast<int*>(rt.counters) + parity * rt.max_counters;
    int* next = reinterpret_cast<int*>(rt.counters) + (parity ^ 1) * rt.max_counters;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < rt.max_counters;
         i += gridDim.x * blockDim.x)
        next[i] = 0;
    return counters;
}

/// All threads, at the end of the kernel: the last worker to finish advances the step
/// (and so the parity the next launch uses).
__device__ __forceinline__ void finish_step(int* step_state) {
    __syncthreads();
    if (threadIdx.x == 0) {
        __threadfence();
        const int done = atomicAdd(step_state + 1, 1);
        if (done == gridDim.x - 1) {
            step_state[1] = 0;
            __threadfence();
            atomicAdd(step_state, 1);
        }
    }
}
"""

_RING_RUNTIME = r"""


/// The weight tile queue entry ``d`` streams through the ring; false when it streams none.
__device__ bool ring_tile_of(const TaskDesc& d, const StepShape& shape, RingTile& t) {
    switch (d.kind) {
{RING_TILES}
        default: return false;
    }
}

/// The ring's producer side: this worker's queue entries after the last one it looked at.
struct QueueSource {
    const TaskDesc* queue;
    int next_entry;
    int end;
    const StepShape* shape;

    __device__ bool next(RingTile& t) {
        while (next_entry < end)
            if (ring_tile_of(queue[next_entry++], *shape, t)) return true;
        return false;
    }
};

using Ring = WeightRing<QueueSource>;

/// The waits of queue entry ``e`` (all threads); warp 0 refills the ring while it spins.
__device__ __forceinline__ bool wait_entry(int e, const BucketTables& bt, int* counters,
                                           DebugState* dbg, Ring& ring) {
    const int* wait_begin = reinterpret_cast<const int*>(bt.wait_begin);
    const int* wait_counter = reinterpret_cast<const int*>(bt.wait_counter);
    const int* wait_target = reinterpret_cast<const int*>(bt.wait_target);
    if (threadIdx.x < 32) ring.pump();
    for (int j = wait_begin[e]; j < wait_begin[e + 1]; ++j)
        if (!ek_wait_warp(counters + wait_counter[j], wait_target[j], dbg, e, wait_counter[j],
                          [&ring] { ring.pump(); }))
            return false;
    return true;
}

/// After the task's writes (all threads): barrier, release-add every notify.
__device__ __forceinline__ void notify_entry(int e, const BucketTables& bt, int* counters) {
    const int* notify_begin = reinterpret_cast<const int*>(bt.notify_begin);
    const int* notify_counter = reinterpret_cast<const int*>(bt.notify_counter);
    __syncthreads();
    if (threadIdx.x == 0)
        for (int j = notify_begin[e]; j < notify_begin[e + 1]; ++j)
            ek_release_add(counters + notify_counter[j], 1);
}

#ifdef EK_TRACE
#define EK_TRACE_AT(e, i, v) do { if (threadIdx.x == 0) ek_trace[8ull * (e) + (i)] = (v); } while (0)
#else
#define EK_TRACE_AT(e, i, v) do { } while (0)
#endif

/// One task: its own weight prefetch first (they never wait), then the events, then the
/// task; notify after its writes. Out-of-shape tasks skip the work but still wait and
/// notify: the events' transitive reduction relies on every task's waits.
template <class Task>
__device__ __forceinline__ bool run_task(const typename Task::Args& args, const StepShape& shape,
                                         const TaskDesc& d, int e, const BucketTables& bt,
                                         int* counters, DebugState* dbg, char* smem, Ring& ring) {
    EK_TRACE_AT(e, 0, global_ns());
    const bool active = Task::active(shape, d.c0, d.c1, d.c2);
    if (active) Task::prefetch(args, d.c0, d.c1, d.c2, smem);
    if (!wait_entry(e, bt, counters, dbg, ring)) {
        if (active) Task::run(args, shape, d.c0, d.c1, d.c2, smem);  // drain async copies
        return false;
    }
    EK_TRACE_AT(e, 1, global_ns());
    if (active) Task::run(args, shape, d.c0, d.c1, d.c2, smem);
    notify_entry(e, bt, counters);
    EK_TRACE_AT(e, 2, global_ns());
    EK_TRACE_AT(e, 3, sm_id());
    return true;
}

/// One linear task through the weight ring (the single call site of the GEMV body).
__device__ __forceinline__ bool run_ring_task(const GemvParams& gemv, const RingTile& tile,
                                           RowTile rows, int n0, const StepShape& shape,
                                           int e, const BucketTables& bt, int* counters,
                                           DebugState* dbg, char* scratch, Ring& ring) {
    EK_TRACE_AT(e, 0, global_ns());
#ifdef EK_TRACE
    if (threadIdx.x == 0) {
        ek_ring_phase = ek_trace + 8ull * e + 4;
        ek_ring_phase[2] = ek_ring_phase[3] = 0;
    }
#endif
    if (!wait_entry(e, bt, counters, dbg, ring)) return false;
    EK_TRACE_AT(e, 1, global_ns());
    if (rows.count > 0) ring_gemv(gemv, tile, rows, n0, scratch, ring);
    notify_entry(e, bt, counters);
    EK_TRACE_AT(e, 2, global_ns());
    EK_TRACE_AT(e, 3, sm_id());
    return true;
}

extern "C" __global__ void ek_smem_sizes(int* out) {
    out[0] = kMaxDynamicSmem;  // the ring and the largest task's scratch: all a CTA may have
}

/// The persistent megakernel: one CTA per SM, each walking its worker's static queue.
/// Shared memory: [weight ring][scratch
/// of the running task]; steps too large for the ring give the ring's bytes to the mma
/// linear template.
extern "C" __global__ void __launch_bounds__(256, 1)
ek_step(const RuntimeState* __restrict__ rtp, const BucketTables* __restrict__ btp) {
    extern __shared__ __align__(128) char smem[];
    __shared__ int s_parity;
    __shared__ unsigned long long s_ring_bars[kRingStages];
    __shared__ StepShape s_shape;
    const RuntimeState rt = *rtp;
    const BucketTables bt = *btp;
#ifdef EK_TRACE
    if (threadIdx.x == 0) ek_trace = reinterpret_cast<unsigned long long*>(rt.trace);
#endif
    int* step_state = reinterpret_cast<int*>(rt.step);
    if (threadIdx.x == 0) {
        s_parity = ld_acquire_gpu(step_state) & 1;
        s_shape = *reinterpret_cast<const StepShape*>(rt.shape);
    }
    __syncthreads();
    const StepShape& shape = s_shape;
    DebugState* dbg = reinterpret_cast<DebugState*>(rt.debug);
    const TaskDesc* queue = reinterpret_cast<const TaskDesc*>(bt.queue);
    const int* queue_begin = reinterpret_cast<const int*>(bt.queue_begin);
    const int w = blockIdx.x;
    const bool has_queue = w < bt.num_workers;
    const int begin = has_queue ? queue_begin[w] : 0;
    const int end = has_queue ? queue_begin[w + 1] : 0;
    const bool ring_mode = cmax(shape.num_tokens, shape.num_seqs) <= kRingRows;
    Ring ring{s_ring_bars, smem, QueueSource{queue, begin, ring_mode ? end : begin, &shape}};
    if (threadIdx.x < 32) {
        ring.init();
        ring.pump();  // the first weights are on their way before anything else happens
    }
    __syncthreads();
    int* counters = step_counters(rt, s_parity);
    for (int e = begin; e < end; ++e) {
        const TaskDesc d = queue[e];
        bool ok = true;
        bool through_ring = false;
        GemvParams gemv;
        RingTile tile;
        RowTile rows;
        int n0 = 0;
        switch (d.kind) {
{DISPATCH}
            default: ok = false;
        }
        if (through_ring)
            ok = run_ring_task(gemv, tile, rows, n0, shape, e, bt, counters, dbg,
                               smem + kRingBytes, ring);
        if (!ok) break;
    }
    if (threadIdx.x == 0) ring.drain();
    finish_step(step_state);
}
"""


_GEMV_RUNTIME = r"""
#ifndef EK_LOOKAHEAD
#define EK_LOOKAHEAD 1  // tasks ahead whose first weight bytes the worker asks L2 for
#endif

/// A queue entry as its worker holds it in shared memory.
struct Entry {
    TaskDesc d;
    EntryEvents ev;
};
static_assert(sizeof(TaskDesc) == 16 && sizeof(EntryEvents) == 16, "one cp.async each");

/// Lanes 0-2 of warp 0: start copying entry ``e`` and the descriptor ``ahead`` (whose
/// weights go to L2 next) into shared memory. The copies land while the current task
/// runs; ``entry_arrived`` waits for them. (After an acquire the L1 cache holds nothing,
/// so reading the tables when the entry starts would cost a chain of L2 round trips.)
__device__ __forceinline__ void fetch_entry(const BucketTables& bt, int e, int ahead,
                                            Entry& entry, TaskDesc& ahead_desc) {
    const TaskDesc* queue = reinterpret_cast<const TaskDesc*>(bt.queue);
    const EntryEvents* events = reinterpret_cast<const EntryEvents*>(bt.events);
    if (threadIdx.x == 0) cp_async16(&entry.d, queue + e);
    if (threadIdx.x == 1) cp_async16(&entry.ev, events + e);
    if (threadIdx.x == 2) cp_async16(&ahead_desc, queue + ahead);
    if (threadIdx.x < 3) cp_async_commit();
}

/// Before the CTA barrier after which the fetched entry is read.
__device__ __forceinline__ void entry_arrived() {
    if (threadIdx.x < 3) cp_async_wait<0>();
}

/// The waits of an entry (all threads). Returns false only when a debug build's wait
/// stopped. An entry with no waits (its worker has waited on all of them already) passes
/// straight through.
__device__ __forceinline__ bool wait_entry(const Entry& x, int e, const BucketTables& bt,
                                           int* counters, DebugState* dbg) {
    const int num_waits = x.d.num_waits;
    if (num_waits == 0) return true;
    const int counter0 = x.ev.counter0;
    if (!ek_wait(counters + counter0, x.ev.target0, dbg, e, counter0)) return false;
    if (num_waits > 1) {
        const int begin = reinterpret_cast<const int*>(bt.wait_begin)[e];
        const int* wait_counter = reinterpret_cast<const int*>(bt.wait_counter);
        const int* wait_target = reinterpret_cast<const int*>(bt.wait_target);
        for (int j = begin + 1; j < begin + num_waits; ++j)
            if (!ek_wait(counters + wait_counter[j], wait_target[j], dbg, e, wait_counter[j]))
                return false;
    }
    return true;
}

/// After the task's writes (all threads): barrier (the next entry has arrived by then),
/// then thread 0 release-adds every notify of the entry (ek_release_add: no fence).
__device__ __forceinline__ void notify_entry(const Entry& x, int e, const BucketTables& bt,
                                             int* counters) {
    const int num_notifies = x.d.num_notifies;   // read before the barrier: after it, the
    const int notify0 = x.ev.notify0;            // entry's slot may be refilled
    entry_arrived();
    __syncthreads();
    if (threadIdx.x == 0 && num_notifies > 0) {
        ek_release_add(counters + notify0, 1);
        if (num_notifies > 1) {
            const int begin = reinterpret_cast<const int*>(bt.notify_begin)[e];
            const int* notify_counter = reinterpret_cast<const int*>(bt.notify_counter);
            for (int j = begin + 1; j < begin + num_notifies; ++j)
                red_release_gpu_add(counters + notify_counter[j], 1);
        }
    }
}

/// Tasks whose run() takes the runtime's wait and calls it after issuing its weight loads.
template <class T, class = void>
struct waits_in_run {
    static constexpr bool value = false;
};
template <class T>
struct waits_in_run<T, decltype(void(T::kWaitsInRun))> {
    static constexpr bool value = T::kWaitsInRun;
};

/// One task: weights first (they never wait), then the events, then the task itself;
/// notify after its writes. Out-of-shape tasks skip the work but still wait and notify:
/// the events' transitive reduction relies on every task's waits. The entry ``x`` was
/// fetched into shared memory while the previous task ran.
template <class Task>
__device__ __forceinline__ bool run_task(const typename Task::Args& args, const StepShape& shape,
                                         const Entry& x, int e, const BucketTables& bt,
                                         int* counters, DebugState* dbg, char* smem) {
#ifdef EK_TRACE
    // Instrumented build: {wait start, run start, end, SM} per queue entry (globaltimer ns;
    // 8 slots per entry, the last 4 used by the weight-ring build).
    unsigned long long* trace = ek_trace + 8ull * e;
    if (threadIdx.x == 0) trace[0] = global_ns();
#endif
    const TaskDesc& d = x.d;
    const bool active = Task::active(shape, d.c0, d.c1, d.c2);
    const auto wait = [&]() {
        const bool ok = wait_entry(x, e, bt, counters, dbg);
#ifdef EK_TRACE
        if (threadIdx.x == 0) trace[1] = global_ns();
#endif
        return ok;
    };
    if constexpr (waits_in_run<Task>::value) {
        // The task issues its first weight loads, then waits.
        if (!Task::run(args, shape, d.c0, d.c1, d.c2, smem, active, wait)) return false;
    } else {
        if (active) Task::prefetch(args, d.c0, d.c1, d.c2, smem);
        if (!wait()) {
            if (active) Task::run(args, shape, d.c0, d.c1, d.c2, smem);  // drain async copies
            return false;
        }
        if (active) Task::run(args, shape, d.c0, d.c1, d.c2, smem);
    }
    notify_entry(x, e, bt, counters);
#ifdef EK_TRACE
    if (threadIdx.x == 0) {
        trace[2] = global_ns();
        trace[3] = sm_id();
    }
#endif
    return true;
}

/// Ask L2 for the weights of queue entry ``d`` (one thread; weights never wait on events).
__device__ __forceinline__ void prefetch_entry_l2(const TaskDesc& d, const StepShape& shape) {
    switch (d.kind) {
{PREFETCH}
        default: break;
    }
}

extern "C" __global__ void ek_smem_sizes(int* out) {
{SMEM}
}

/// The persistent megakernel: one CTA per SM, each walking its worker's static queue. The
/// next entry, and the descriptor whose weights go to L2 next, are fetched into shared
/// memory while the current task runs (two slots, alternating).
extern "C" __global__ void __launch_bounds__(256, 1)
ek_step(const RuntimeState* __restrict__ rtp, const BucketTables* __restrict__ btp) {
    extern __shared__ __align__(128) char smem[];
    __shared__ int s_parity;
    __shared__ StepShape s_shape;
    __shared__ __align__(16) Entry s_entry[2];
    __shared__ __align__(16) TaskDesc s_ahead[2];
    const RuntimeState rt = *rtp;
    const BucketTables bt = *btp;
#ifdef EK_TRACE
    if (threadIdx.x == 0) ek_trace = reinterpret_cast<unsigned long long*>(rt.trace);
#endif
    int* step_state = reinterpret_cast<int*>(rt.step);
    const int w = blockIdx.x;
    const int* queue_begin = reinterpret_cast<const int*>(bt.queue_begin);
    const bool has_queue = w < bt.num_workers;
    const int begin = has_queue ? queue_begin[w] : 0;
    const int end = has_queue ? queue_begin[w + 1] : 0;
    constexpr int kLookahead = EK_LOOKAHEAD;   // tasks whose weights are on their way to L2
    constexpr int kL2Thread = 32;              // warp 1 asks L2 while warp 0 polls events
    if (begin < end) fetch_entry(bt, begin, cmin(begin + kLookahead, end), s_entry[0], s_ahead[0]);
    if (threadIdx.x == 0) {
        s_parity = ld_acquire_gpu(step_state) & 1;
        s_shape = *reinterpret_cast<const StepShape*>(rt.shape);
    }
    entry_arrived();
    __syncthreads();
    int* counters = step_counters(rt, s_parity);
    const StepShape& shape = s_shape;
    DebugState* dbg = reinterpret_cast<DebugState*>(rt.debug);
    if (threadIdx.x == kL2Thread) {
        const TaskDesc* queue = reinterpret_cast<const TaskDesc*>(bt.queue);
        for (int e = begin; e < cmin(end, begin + kLookahead); ++e)
            prefetch_entry_l2(queue[e], shape);
    }
    for (int e = begin; e < end; ++e) {
        const int slot = (e - begin) & 1;
        const Entry& x = s_entry[slot];
        const TaskDesc d = x.d;
        if (threadIdx.x == kL2Thread && e + kLookahead < end)
            prefetch_entry_l2(s_ahead[slot], shape);
        if (e + 1 < end)
            fetch_entry(bt, e + 1, cmin(e + 1 + kLookahead, end), s_entry[slot ^ 1],
                        s_ahead[slot ^ 1]);
        bool ok = true;
        switch (d.kind) {
{DISPATCH}
        default: ok = false;
        }
        if (!ok) break;
    }
    entry_arrived();  // none in flight when the kernel ends (a debug build may stop early)
    finish_step(step_state);
}
"""
