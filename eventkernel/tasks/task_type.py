"""A task type: the one declaration that joins a task's lowering, CPU twin and CUDA binding.

Each module of :mod:`eventkernel.tasks` defines one (attention defines its merge too) as a
:class:`TaskType`; the registry in ``tasks/__init__.py`` lists them. The compiler looks the
lowering up by op kind, the CPU executor the twin by ``TaskGrid.task_type``, and code
generation the CUDA binding by the same name.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from eventkernel.ir.graph import Node, OpKind, Tensor
from eventkernel.ir.symbols import DimLike
from eventkernel.lower.grid import Program, TaskGrid
from eventkernel.lower.rules import Target
from eventkernel.tasks.cases import TemplateCase
from eventkernel.tasks.common import Step

Tensors = dict[str, Tensor]


@dataclass(frozen=True, slots=True)
class Arg:
    """One member of a task's CUDA ``Args`` struct, in declaration order: a buffer
    pointer (``tensor`` names it) or a constant (``value`` is its C++ expression).

    # NOTE: the Args members are the wire format; their order is the struct's order.
    """

    c_type: str
    tensor: str | None = None
    value: str | None = None


def pointer(c_type: str, tensor: str) -> Arg:
    """An Args member that points at ``tensor``'s buffer."""
    return Arg(c_type, tensor=tensor)


def constant(c_type: str, value: object) -> Arg:
    """An Args member with a compile-time value (``value`` is written as C++)."""
    return Arg(c_type, value=str(value))


def float_constant(value: float) -> Arg:
    """A ``float`` Args member, written as Python's shortest repr plus ``f``."""
    return Arg("float", value=repr(float(value)) + "f")


class NotOnGpu(ValueError):
    """The CUDA template of a task type cannot run this grid (code generation reports it
    as ``UnsupportedOnGpu``)."""


@dataclass(frozen=True)
class Lowered:
    """What a lowering returns: task grids in program order, the workspace tensors they
    add to the program (attention's split-KV partials), and the run-time partitions their
    regions cut dims by, with the bound on each one's parts (``Seg.space`` -> count)."""

    grids: tuple[TaskGrid, ...]
    workspaces: Tensors = field(default_factory=dict)
    segments: dict[str, DimLike] = field(default_factory=dict)


Lowering = Callable[[Node, Tensors, Target], Lowered]
Twin = Callable[[TaskGrid, tuple[int, ...], Step], None]
CudaBinding = Callable[[TaskGrid, Program], tuple[str, list[Arg]]]


def no_cases() -> tuple[TemplateCase, ...]:
    """For a task type whose template is tested through another's cases."""
    return ()


@dataclass(frozen=True)
class TaskType:
    """One task type.

    ``name`` is ``TaskGrid.task_type``. ``op`` and ``lower``: the op kind whose lowering
    this task type owns (``None`` when another task type's lowering emits its grids, as
    attention emits its merge). ``twin(grid, coords, step)`` computes one task on the
    CPU. ``cuda(grid, program)`` gives the template instantiation and its Args members;
    ``header`` is its file under ``cuda/include/``. ``cases()``: the GPU template tests
    (see :mod:`eventkernel.tasks.cases`), run against ``twin``. ``group_axis``: a coordinate
    along which tasks of one grid never depend on each other and ``twin`` also takes a
    ``range`` of it, computing that run of tasks in one call (the CPU executor's one-worker
    path groups consecutive tasks so; None: one task a call).
    """

    name: str
    twin: Twin
    cuda: CudaBinding
    header: str
    op: OpKind | None = None
    lower: Lowering | None = None
    cases: Callable[[], tuple[TemplateCase, ...]] = no_cases
    group_axis: int | None = None

    def __post_init__(self) -> None:
        if (self.op is None) != (self.lower is None):
            raise ValueError(f"task type {self.name!r}: give both op and lower, or neither")
