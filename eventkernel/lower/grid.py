"""Task grids: an op cut into tile tasks, each with the regions it reads and writes.

A region is a box: one entry per tensor dim, either an interval ``(lo, hi)`` or a
:class:`Seg` — a data-dependent part of a dim (the token rows of sequence ``s``, the
KV-cache slots written by row tile ``r``) that is disjoint from the other parts of the
same partition but may overlap anything else.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from eventkernel.ir.graph import Node, Tensor
from eventkernel.ir.symbols import Binding, DimLike, evaluate


# The run-time partitions that lowerings cut dims by (Seg.space); events/derive.py counts
# their parts per binding.
ROWS_OF_SEQ = "token rows of sequence"
SLOTS_OF_ROWTILE = "cache slots of row tile"
PAGES_OF_SEQ = "cache pages of sequence"


@dataclass(frozen=True, slots=True)
class RuntimeExtent:
    """A grid coordinate whose extent is data, written by an earlier task of the step.

    Task ``c`` exists at run time only if ``c[axis] < value``, where ``value`` is element
    ``index`` (flat) of the tensor read by the grid's access number ``access`` (the MoE work
    table: how many expert work items the router made). The static extent of the axis is
    the value's bound. A task past the value does nothing: it waits only for the events
    that order it after the value's writer, and notifies nothing; the events it would have
    notified count one notify less (their wait counts are read from the same value).
    """

    axis: int
    access: int
    index: int = 0

    def __post_init__(self) -> None:
        # NOTE: the first coordinate: tasks of the grid are then ordered by it, which the
        # verifier's masks of "items >= w" rely on.
        if self.axis != 0:
            raise ValueError("a run-time extent bounds a grid's first coordinate (axis 0)")


@dataclass(frozen=True, slots=True)
class Seg:
    """Part ``index`` of the run-time partition ``space`` of a dim."""

    space: str
    index: int


Extent = tuple[int, int] | Seg
Region = tuple[Extent, ...]
# (coords, binding) -> region of the tensor that the task touches
RegionFn = Callable[[tuple[int, ...], Binding], Region]


@dataclass(frozen=True, slots=True)
class Access:
    tensor: str
    mode: str                 # "r" or "w"
    region: RegionFn
    note: str = ""            # e.g. "rows of sequence s (data-dependent)"


@dataclass(frozen=True, slots=True)
class Cost:
    """What one task moves and computes; the static scheduler's cost model input."""

    weight_bytes: int
    activation_bytes: int
    flops: int


@dataclass(frozen=True)
class TaskGrid:
    """The tile tasks of one op (or of one stage of an op, e.g. attention's merge)."""

    name: str                              # unique, e.g. "5:o_proj"
    task_type: str                         # template family, e.g. "linear"
    node: Node
    grid: tuple[DimLike, ...]              # extent of each coordinate
    coord_names: tuple[str, ...]
    tile: dict[str, Any]                   # compile-time tile parameters
    accesses: tuple[Access, ...]
    cost: Callable[[tuple[int, ...], Binding], Cost]
    index: int = -1                        # position in program order
    extra: dict[str, Any] = field(default_factory=dict)
    runtime_extent: RuntimeExtent | None = None   # a coordinate bounded by data (MoE)

    def extents(self, binding: Binding) -> tuple[int, ...]:
        return tuple(evaluate(d, binding) for d in self.grid)

    def tasks(self, binding: Binding) -> Iterator[tuple[int, ...]]:
        return itertools.product(*(range(n) for n in self.extents(binding)))

    def num_tasks(self, binding: Binding) -> int:
        n = 1
        for e in self.extents(binding):
            n *= e
        return n

    @property
    def extent_tensor(self) -> str | None:
        """The tensor holding the run-time extent of a coordinate, if any."""
        rt = self.runtime_extent
        return None if rt is None else self.accesses[rt.access].tensor

    def reads(self) -> tuple[Access, ...]:
        return tuple(a for a in self.accesses if a.mode == "r")

    def writes(self) -> tuple[Access, ...]:
        return tuple(a for a in self.accesses if a.mode == "w")

    def __str__(self) -> str:
        grid = " x ".join(f"{n}={d}" for n, d in zip(self.coord_names, self.grid))
        tile = ", ".join(f"{k}={v}" for k, v in self.tile.items())
        return f"{self.name} [{self.task_type}] grid({grid}) tile({tile})"


@dataclass(frozen=True)
class Program:
    """Task grids in program order plus every tensor they touch (graph + workspaces)."""

    grids: tuple[TaskGrid, ...]
    tensors: dict[str, Tensor]
    maxima: dict[str, int]
    meta: dict[str, Any]
    segments: dict[str, DimLike] = field(default_factory=dict)  # run-time partitions: parts

    def grid(self, name: str) -> TaskGrid:
        return next(g for g in self.grids if g.name == name)

    @property
    def max_binding(self) -> dict[str, int]:
        return dict(self.maxima)

    def dump(self, binding: Binding | None = None) -> str:
        binding = binding or self.max_binding
        return "\n".join(f"{g}  -> {g.num_tasks(binding)} tasks" for g in self.grids)
