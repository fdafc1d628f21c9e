"""Event tensors: multi-dimensional counters indexed by task coordinates.

A consumer task ``c`` of grid C waits until element ``E[wait_map(c)]`` has been notified
``wait_count`` times; every producer task ``p`` of grid P notifies the elements
``notify_map(p)`` after its writes are visible. Maps are shown as einsum-like strings
(``"row_tile,kv_head->kv_head"``, a ``//k`` allowed on a term) where they are
projections, and as tables otherwise.
"""
from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

import numpy as np

from eventkernel.ir.symbols import Binding, DimLike, Expr


@dataclass(frozen=True)
class CSR:
    """Rows of int lists: ``values[offsets[i]:offsets[i+1]]`` is row ``i``."""

    offsets: np.ndarray
    values: np.ndarray

    @classmethod
    def from_lists(cls, rows: list) -> "CSR":
        offsets = np.zeros(len(rows) + 1, np.int64)
        offsets[1:] = np.cumsum([len(r) for r in rows])
        values = np.fromiter(itertools.chain.from_iterable(rows), np.int64, int(offsets[-1]))
        return cls(offsets, values)

    def row(self, i: int) -> np.ndarray:
        return self.values[self.offsets[i]:self.offsets[i + 1]]

    @functools.cached_property
    def lists(self) -> list[list[int]]:
        """Every row as a list of Python ints (for loops over many short rows, where
        numpy's per-call overhead dominates); built once, do not modify."""
        values, offsets = self.values.tolist(), self.offsets.tolist()
        return [values[a:b] for a, b in zip(offsets, offsets[1:])]

    def __len__(self) -> int:
        return len(self.offsets) - 1


@dataclass(frozen=True)
class IndexMap:
    """Task coordinates -> event coordinates; ``spec`` is its einsum-like form or 'table'."""

    spec: str
    table: CSR              # task local index -> element flat indices (the materialised map)

    def __str__(self) -> str:
        return self.spec


@dataclass(frozen=True)
class WaitCount:
    """How many notifies fire an element: one expression for all elements, or per element.

    ``expr`` is an int or an expression of symbols; ``None`` means per element, counted
    from the producers that exist under the binding. ``runtime``: the producer grid has a
    run-time extent (MoE work items), so the count is read at run time: the producers
    that exist under the binding, less those past the extent the route wrote this step
    (``expr`` is then the count when every item exists).
    """

    expr: DimLike | None
    runtime: bool = False

    def __str__(self) -> str:
        count = "per-element" if self.expr is None else str(self.expr)
        return count + (" (at most; run-time: items past the work count do not notify)"
                        if self.runtime else "")


@dataclass(frozen=True)
class EventTensor:
    name: str
    producer: int                   # grid index
    consumer: int                   # grid index
    shape: tuple[DimLike, ...]      # extents of the consumer coordinates it is indexed by
    dims: tuple[str, ...]
    wait_map: IndexMap              # consumer task -> its one element
    notify_map: IndexMap            # producer task -> elements
    wait_count: WaitCount
    producers: CSR                  # element -> producer tasks (local ids, hull numbering)

    @property
    def size(self) -> int:
        return len(self.producers)

    def counts(self, producer_exists: np.ndarray) -> np.ndarray:
        """Wait count of every element given which producer tasks exist."""
        alive = producer_exists[self.producers.values].astype(np.int64)
        sums = np.add.reduceat(alive, self.producers.offsets[:-1]) if len(alive) else \
            np.zeros(self.size, np.int64)
        empty = self.producers.offsets[1:] == self.producers.offsets[:-1]
        sums[empty] = 0
        return sums

    def __str__(self) -> str:
        shape = ", ".join(f"{n}={d}" for n, d in zip(self.dims, self.shape)) or "scalar"
        return (f"{self.name}[{shape}] wait {self.wait_map} notify {self.notify_map} "
                f"count {self.wait_count}")


def expr_matches(expr: DimLike, counts_by_binding: list[tuple[Binding, np.ndarray]]) -> bool:
    for binding, counts in counts_by_binding:
        value = expr if isinstance(expr, int) else Expr.eval(expr, binding)
        if not (counts == value).all():
            return False
    return True
