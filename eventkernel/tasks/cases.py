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
    absolute error; the others by :data:`REL_TOL`.
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
    task (``launch`` = the grid's extents at the program's maxima).
    ``buffers``: the tensors its pointer array holds."""

    name: str
    template: str
    grid: int                        # index of the task grid in the program
    args: tuple[str, ...]            # C++ initialisers of the Args members
    buffers: tuple[str, ...]
    launch: tuple[int, int, int]
    path: str = ""                   # "" (the binding's template) or a variant's label
    max_rows: int = 1 << 30


def template_kernels(case: TemplateCase, program: Program) -> list[Kernel]:
    """The wrapper kernels of ``case`` lowered to ``program``: each grid's template, its
    variants."""
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


PRELUDE = """// Generated by eventkernel.tasks.cases: the GPU template tests.
#include "testing/harness.cuh"
using namespace ek;
"""


def template_test_source(kernels: list[Kernel]) -> str:
    """The CUDA source of ``kernels`` plus ``smem_sizes(int* out)``, which writes each
    kernel's dynamic shared memory in order ."""
    parts = [PRELUDE]
    sizes = []
    for i, k in enumerate(kernels):
        args = ",\n        ".join(k.args)
        parts.append(
            f"TEMPLATE_TEST_KERNEL({k.name}) {{\n"
            f"    using Task = {k.template};\n"
            f"    const Task::Args a{{\n        {args}}};\n"
            f"    prefetch_and_run<Task>(a, shape);\n}}\n")
        sizes.append(f"    out[{i}] = {k.template}::kSmemBytes;")
    parts.append("TEMPLATE_TEST_SMEM_SIZES {\n" + "\n".join(sizes) + "\n}\n")
    return "\n".join(parts)
