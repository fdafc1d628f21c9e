"""GPU template tests, declared by each task type and generated from its CUDA binding.

A :class:`TemplateCase` is a one-op graph, the target it is cut for and the steps to run.
``tests/gpu/test_task_templates.py`` lowers it, builds one wrapper kernel per task grid
from the task type's binding (:func:`template_kernels`, :func:`template_test_source`),
runs every task of the grid, one CTA each, and compares the buffers it writes with the
task type's CPU twin run on the same random inputs (the twin is the oracle).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from eventkernel.ir.graph import DType, Graph, GraphBuilder, OpKind, TensorKind
from eventkernel.lower.grid import Program
from eventkernel.lower.rules import Target

REL_TOL = 1e-2        # ||out - twin|| / ||twin|| over the written elements (bf16 rounding)


@dataclass(frozen=True)
class CaseStep:
    """One step of a case: its real shape and the step inputs (tensor name -> ints, nested
    for 2-d tensors). ``rows``: the rows a task sees (tokens, or sequences for a RowSet of
    sequences), which a :class:`Variant` limits."""

    num_tokens: int
    num_seqs: int = 0
    inputs: dict[str, tuple] = field(default_factory=dict)
    rows: int = 0

    @property
    def label(self) -> str:
        return f"T{self.num_tokens}" + (f"S{self.num_seqs}" if self.num_seqs else "")


@dataclass(frozen=True)
class Variant:
    """Another template run with the same Args and launch (the decode GEMVs of a linear):
    the binding's template with ``old`` replaced by ``new``; steps of more than
    ``max_rows`` rows skip it."""

    label: str
    old: str
    new: str
    max_rows: int = 1 << 30

# (shape, generator) -> the tensor's contents, for inputs that random values do not fit
Fill = Callable[[tuple[int, ...], torch.Generator], torch.Tensor]


@dataclass(frozen=True)
class TemplateCase:
    """One op to test on the GPU against its twin.

    ``scales``: standard deviation of the random values per tensor (default 1);
    ``fills``: tensors filled otherwise (RoPE frequencies, logits with ties).
    ``exact``: written tensors compared bit for bit; ``abs_tol``: compared by the largest
    absolute error; the others by :data:`REL_TOL`. ``ring_max_rows``: also run linears
    through the weight ring for steps of at most this many rows (0: not).
    """

    name: str
    graph: Graph
    target: Target
    steps: tuple[CaseStep, ...]
    scales: dict[str, float] = field(default_factory=dict)
    fills: dict[str, Fill] = field(default_factory=dict)
    exact: frozenset[str] = frozenset()
    abs_tol: dict[str, float] = field(default_factory=dict)
    variants: tuple[Variant, ...] = ()
    ring_max_rows: int = 0


def one_op(kind: OpKind, maxima: dict[str, int], tensors: dict[str, tuple],
           inputs: dict[str, str], outputs: dict[str, str], **attrs: object) -> Graph:
    """A graph of one op; ``tensors``: name -> (shape, dtype, kind)."""
    g = GraphBuilder(maxima)
    for name, (shape, dtype, tensor_kind) in tensors.items():
        g.tensor(name, shape, dtype, tensor_kind)
    g.op(kind, inputs, outputs, **attrs)
    return g.build()


def weight(*shape: object, dtype: DType = DType.BF16) -> tuple:
    """A weight tensor's (shape, dtype, kind) for :func:`one_op`; the same for the others."""
    return (shape, dtype, TensorKind.WEIGHT)


def activation(*shape: object, dtype: DType = DType.BF16) -> tuple:
    return (shape, dtype, TensorKind.ACTIVATION)


def step_input(*shape: object) -> tuple:
    return (shape, DType.I32, TensorKind.INPUT)


def state(*shape: object) -> tuple:
    return (shape, DType.BF16, TensorKind.STATE)


# ---------------------------------------------------------------------------------------
# wrapper kernels from the bindings


@dataclass(frozen=True)
class Kernel:
    """One wrapper kernel: a template run with the Args of a grid's binding, one CTA per
    task (``launch`` = the grid's extents at the program's maxima, or one CTA that walks
    every column tile for ``ring``). ``buffers``: the tensors its pointer array holds."""

    name: str
    template: str
    grid: int                        # index of the task grid in the program
    args: tuple[str, ...]            # C++ initialisers of the Args members
    buffers: tuple[str, ...]
    launch: tuple[int, int, int]
    path: str = ""                   # "" (the binding's template), a variant's label, "ring"
    max_rows: int = 1 << 30

    @property
    def ring(self) -> bool:
        return self.path == "ring"


def template_kernels(case: TemplateCase, program: Program) -> list[Kernel]:
    """The wrapper kernels of ``case`` lowered to ``program``: each grid's template, its
    variants and, when asked for, the weight ring."""
    # NOTE: imported here: the task modules import this one for their cases.
    from eventkernel.tasks import task_type

    kernels = []
    for grid in program.grids:
        template, args = task_type(grid.task_type).cuda(grid, program)
        buffers = tuple(dict.fromkeys(a.tensor for a in args if a.tensor is not None))
        inits = tuple(f"static_cast<{a.c_type}>(buffers[{buffers.index(a.tensor)}])"
                      if a.tensor is not None else f"static_cast<{a.c_type}>({a.value})"
                      for a in args)
        extents = (*grid.extents(program.max_binding), 1, 1)[:3]
        base = f"{case.name}_{grid.index}"
        kernels.append(Kernel(base, template, grid.index, inits, buffers, extents))
        for v in case.variants:
            kernels.append(Kernel(f"{base}_{v.label}", template.replace(v.old, v.new),
                                  grid.index, inits, buffers, extents, v.label, v.max_rows))
        if case.ring_max_rows and template.startswith("LinearTask<"):
            kernels.append(Kernel(f"{base}_ring", template, grid.index, inits, buffers,
                                  (1, 1, 1), "ring", case.ring_max_rows))
    return kernels


def registry_cases() -> tuple[TemplateCase, ...]:
    """Every registered task type's cases, in registry order."""
    from eventkernel.tasks import TASK_TYPES

    return tuple(case for t in TASK_TYPES for case in t.cases())


def registry_template_source() -> tuple[str, dict[str, list[Kernel]]]:
    """The whole GPU template test: its CUDA source and each case's kernels by case name.

    # NOTE: the one place the test source is written (the GPU test runs it, a CPU test
    # compiles it for sm_90a).
    """
    from eventkernel.lower import lower

    kernels = {case.name: template_kernels(case, lower(case.graph, case.target))
               for case in registry_cases()}
    return template_test_source([k for ks in kernels.values() for k in ks]), kernels


PRELUDE = r"""// Generated by eventkernel.tasks.cases: the GPU template tests.
#include "eventkernel.cuh"
using namespace ek;

template <typename Task>
__device__ __forceinline__ void prefetch_and_run(const typename Task::Args& args,
                                                 const StepShape* shape) {
    extern __shared__ __align__(128) char smem[];
    // NOTE: no active() check: out-of-shape tasks must return cleanly by themselves.
    Task::prefetch(args, blockIdx.x, blockIdx.y, blockIdx.z, smem);
    Task::run(args, *shape, blockIdx.x, blockIdx.y, blockIdx.z, smem);
}

// The linear through the weight ring: one CTA streams every column tile, the ring running
// ahead across tiles as it does across a worker's queue.
template <typename Task>
__device__ __forceinline__ void ring_all_tiles(const typename Task::Args& a,
                                               const StepShape* shape) {
    extern __shared__ __align__(128) char smem[];
    __shared__ unsigned long long bars[kRingStages];
    const RowTile rows = row_tile(*shape, Task::kRowSet, 0);
    const int tiles = ceil_div(a.n, Task::kTileN);
    WeightRing<ColumnTiles> ring{bars, smem, ColumnTiles{a.weight, Task::kK, Task::kTileN,
                                                         a.n, 0, rows.count > 0 ? tiles : 0}};
    if (threadIdx.x < 32) {
        ring.init();
        ring.pump();
    }
    __syncthreads();
    const GemvParams p = gemv_params<Task>(a);
    for (int c1 = 0; c1 < tiles && rows.count > 0; ++c1)
        ring_gemv(p, ring_tile(a.weight, Task::kK, Task::kTileN, a.n, c1), rows,
                  c1 * Task::kTileN, smem + kRingBytes, ring);
}
"""


def template_test_source(kernels: list[Kernel]) -> str:
    """The CUDA source of ``kernels`` plus ``smem_sizes(int* out)``, which writes each
    kernel's dynamic shared memory in order (the ring's: ``kMaxDynamicSmem``)."""
    parts = [PRELUDE]
    sizes = []
    for i, k in enumerate(kernels):
        run = "ring_all_tiles" if k.ring else "prefetch_and_run"
        args = ",\n        ".join(k.args)
        parts.append(
            f'extern "C" __global__ void __launch_bounds__(256, 1)\n'
            f"{k.name}(void* const* buffers, const StepShape* shape) {{\n"
            f"    using Task = {k.template};\n"
            f"    const Task::Args a{{\n        {args}}};\n"
            f"    {run}<Task>(a, shape);\n}}\n")
        size = "kMaxDynamicSmem" if k.ring else f"{k.template}::kSmemBytes"
        sizes.append(f"    out[{i}] = {size};")
    parts.append('extern "C" __global__ void smem_sizes(int* out) {\n' + "\n".join(sizes)
                 + "\n}\n")
    return "\n".join(parts)
