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

    def extents(self, binding: Binding) -> tuple[int, ...]:
        return tuple(evaluate(d, binding) for d in self.grid)

    def tasks(self, binding: Binding) -> Iterator[tuple[int, ...]]:
        return itertools.product(*(range(n) for n in self.extents(binding)))

    def num_tasks(self, binding: Binding) -> int:
        n = 1
        for e in self.extents(binding):
            n *= e
        return n

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

    def grid(self, name: str) -> TaskGrid:
        return next(g for g in self.grids if g.name == name)

    @property
    def max_binding(self) -> dict[str, int]:
        return dict(self.maxima)

    def dump(self, binding: Binding | None = None) -> str:
        binding = binding or self.max_binding
        return "\n".join(f"{g}  -> {g.num_tasks(binding)} tasks" for g in self.grids)
