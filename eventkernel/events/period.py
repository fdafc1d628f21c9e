"""Repeated blocks of grids (a model's layers): derive the events of a few, copy the rest.

A decoder's layers lower to the same grids over different weights and KV-cache layers.
Once the events of the third layer come out as the second layer's shifted by one layer
(and no event of the third layer reaches further back than the second), every later
layer's events are that layer's shifted again: the derivation of a layer only sees the
grids between its producers and itself (conflicts stop at the last covering writer, and
a path that implies a dependency runs through the grids between its ends), and those
windows are the same grids under a renaming of the per-layer tensors.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from eventkernel.events.tensor import CSR, EventTensor, IndexMap
from eventkernel.lower.grid import Program, TaskGrid

# NOTE: lowering reads a node's kind, attrs and tensor shapes, never a tensor's name or
# the "layer" attr (which only names the layer for dumps); that is what makes two grids
# with equal signatures lower to the same regions. (The one exception renames along: an
# expert linear's Seg partition is named after its layer's work table.)
_NAMING_ATTRS = ("layer",)


@dataclass(frozen=True)
class Period:
    """Grids ``start + k * length + j`` (k < count, j < length) repeat grid ``start + j``."""

    start: int
    length: int
    count: int

    @property
    def end(self) -> int:
        return self.start + self.length * self.count

    def rep(self, k: int) -> range:
        return range(self.start + k * self.length, self.start + (k + 1) * self.length)


def find_period(program: Program, min_count: int = 4) -> Period | None:
    """The repeated block covering the most grids (shortest block, then earliest start,
    on ties) whose repetitions touch the same tensors up to a renaming of tensors private to each
    repetition; None if no block repeats ``min_count`` times."""
    sigs = [_signature(program, g) for g in program.grids]
    n, best = len(sigs), None
    for length in range(1, n // min_count + 1):
        run = 0
        for i in range(n - length - 1, -2, -1):    # run[i]: sigs[i + k] == sigs[i + k + length]
            run = run + 1 if i >= 0 and sigs[i] == sigs[i + length] else 0
            if i >= 0 and run >= length * (min_count - 1):
                period = Period(i, length, run // length + 1)
                if (best is None or _rank(period) > _rank(best)) and \
                        _renames_consistently(program, period):
                    best = period
    return best


def _rank(period: Period) -> tuple[int, int, int]:
    """Most grids covered, then the shortest block, then the earliest start."""
    return period.count * period.length, -period.length, -period.start


def _signature(program: Program, grid: TaskGrid) -> tuple:
    node = grid.node
    attrs = tuple(sorted((k, repr(v)) for k, v in node.attrs.items() if k not in _NAMING_ATTRS))
    accesses = []
    for acc in grid.accesses:
        t = program.tensors[acc.tensor]
        accesses.append((acc.mode, acc.note, t.kind, t.shape, t.dtype))
    return (grid.task_type, grid.grid, grid.coord_names, repr(grid.tile), repr(grid.extra),
            repr(grid.runtime_extent), node.kind, attrs, tuple(node.inputs),
            tuple(node.outputs), tuple(accesses))


def _renames_consistently(program: Program, period: Period) -> bool:
    """Every repetition touches the first one's tensors under one renaming that keeps the
    tensors used outside the first repetition and maps the others to tensors used only in
    their own repetition."""
    used_in: dict[str, set[int]] = {}
    for gi, g in enumerate(program.grids):
        for acc in g.accesses:
            used_in.setdefault(acc.tensor, set()).add(gi)
    first = set(period.rep(0))
    for k in range(1, period.count):
        rep = set(period.rep(k))
        mapping: dict[str, str] = {}
        for j in range(period.length):
            a, b = program.grids[period.rep(0)[j]], program.grids[period.rep(k)[j]]
            for x, y in zip(a.accesses, b.accesses):
                if mapping.setdefault(x.tensor, y.tensor) != y.tensor:
                    return False
        if len(set(mapping.values())) != len(mapping):
            return False
        for x, y in mapping.items():
            shared = not used_in[x] <= first
            if (x != y) if shared else not used_in[y] <= rep:
                return False
    return True


def repeats_shifted(events_of: dict[int, list[EventTensor]], period: Period) -> bool:
    """Are the events of repetition 2 those of repetition 1 shifted by one repetition, with
    every producer inside repetitions 1 and 2?"""
    shift = period.length
    for ci in period.rep(2):
        mine, before = events_of[ci], events_of[ci - shift]
        if len(mine) != len(before):
            return False
        for ev, ref in zip(mine, before):
            if ev.producer < period.start + shift or not _same(ev, ref, shift):
                return False
    return True


def shifted(ev: EventTensor, shift: int, eid: int) -> EventTensor:
    """``ev`` between the grids ``shift`` later, named as event ``eid``."""
    return EventTensor(**{**ev.__dict__, "name": f"E{eid}", "producer": ev.producer + shift,
                          "consumer": ev.consumer + shift})


def _same(ev: EventTensor, ref: EventTensor, shift: int) -> bool:
    return (ev.producer == ref.producer + shift and ev.consumer == ref.consumer + shift
            and ev.shape == ref.shape and ev.dims == ref.dims
            and ev.wait_count == ref.wait_count and _same_map(ev.wait_map, ref.wait_map)
            and _same_map(ev.notify_map, ref.notify_map)
            and _same_csr(ev.producers, ref.producers))


def _same_map(a: IndexMap, b: IndexMap) -> bool:
    return a.spec == b.spec and _same_csr(a.table, b.table)


def _same_csr(a: CSR, b: CSR) -> bool:
    return np.array_equal(a.offsets, b.offsets) and np.array_equal(a.values, b.values)
