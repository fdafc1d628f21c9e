"""Event tables for one binding of the symbols (one shape bucket).

Counters of all event tensors are laid out in one flat array; each existing task gets
the counters it waits on (with the count that fires each) and the counters it notifies.
These tables are what both backends consume; neither re-derives dependencies.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from eventkernel.events.derive import EventPlan
from eventkernel.events.tensor import CSR
from eventkernel.ir.symbols import Binding


@dataclass(frozen=True)
class BoundEvents:
    plan: EventPlan
    binding: dict[str, int]
    exists: tuple[np.ndarray, ...]       # per grid: which hull tasks exist
    counter_base: np.ndarray             # per event tensor: first counter id
    targets: np.ndarray                  # per counter: notifies that fire it
    waits: tuple[CSR, ...]               # per grid: local task -> counter ids
    notifies: tuple[CSR, ...]            # per grid: local task -> counter ids
    # Run-time extents (MoE): the (tensor, flat index) of each, per grid its (extent, axis),
    # and per counter whose producers it bounds: (extent, m, w0, w1), the count being
    # m * clamp(value - w0, 0, w1 - w0). A task's waits list such counters last.
    extents: tuple[tuple[str, int], ...] = ()
    grid_extent: tuple[tuple[int, int] | None, ...] = ()
    runtime_counts: dict[int, tuple[int, int, int, int]] = field(default_factory=dict)

    @property
    def num_counters(self) -> int:
        return len(self.targets)

    @property
    def has_runtime(self) -> bool:
        """Does any grid have a run-time extent (counts read from data at run time)?"""
        return bool(self.extents)

    def runtime_target(self, counter: int, value: int) -> int:
        """The wait count of ``counter`` when its run-time extent holds ``value``."""
        _, m, w0, w1 = self.runtime_counts[counter]
        return m * min(max(value - w0, 0), w1 - w0)

    @functools.cached_property
    def static_waits(self) -> tuple[list[int], ...]:
        """Per grid and local task: how many of its waits (the first ones) have counts known
        before the step; the rest are read from the run-time extents."""
        runtime = self.runtime_counts
        return tuple([sum(1 for k in row if k not in runtime) for row in rows]
                     for rows in self.wait_lists)

    def tasks(self, grid: int) -> np.ndarray:
        """Local ids of the tasks of ``grid`` that exist under the binding."""
        return np.nonzero(self.exists[grid])[0]

    @functools.cached_property
    def wait_lists(self) -> tuple[list[list[int]], ...]:
        """``waits`` as Python lists, per grid and local task (built once)."""
        return tuple(w.lists for w in self.waits)

    @functools.cached_property
    def notify_lists(self) -> tuple[list[list[int]], ...]:
        """``notifies`` as Python lists, per grid and local task (built once)."""
        return tuple(n.lists for n in self.notifies)


def bind_events(plan: EventPlan, binding: Binding, prune: bool = True) -> BoundEvents:
    """Wait/notify tables and wait counts for ``binding``; ``prune`` drops waits implied
    by other waits at this shape."""
    binding = dict(binding)
    for name, top in plan.program.maxima.items():
        if not 1 <= binding.get(name, 0) <= top:
            raise ValueError(f"symbol {name}={binding.get(name)} is outside [1, {top}], the "
                             f"range this program was compiled for")
    space = plan.space
    exists = tuple(space.exists(g, binding) for g in range(len(plan.program.grids)))
    sizes = np.array([e.size for e in plan.events], np.int64)
    base = np.concatenate([[0], np.cumsum(sizes)[:-1]]) if len(sizes) else np.zeros(0, np.int64)
    targets = np.concatenate([e.counts(exists[e.producer]) for e in plan.events]) \
        if plan.events else np.zeros(0, np.int64)
    waits: list[list[list[int]]] = [[[] for _ in ex] for ex in exists]
    notifies: list[list[list[int]]] = [[[] for _ in ex] for ex in exists]
    fired = (targets > 0).tolist()
    for eid, ev in enumerate(plan.events):
        first = int(base[eid])
        rows, out = ev.wait_map.table.lists, waits[ev.consumer]
        for c in np.nonzero(exists[ev.consumer])[0].tolist():
            for elem in rows[c]:
                if fired[first + elem]:
                    out[c].append(first + elem)
        rows, out = ev.notify_map.table.lists, notifies[ev.producer]
        for p in np.nonzero(exists[ev.producer])[0].tolist():
            out[p].extend(first + elem for elem in rows[p])
    runtime = _runtime_counts(plan, exists, base)
    if prune:
        _prune_implied(exists, targets, waits, notifies, runtime,
                       [space.grid_domain[g] is not None for g in range(len(exists))])
    if runtime:                            # static waits first: they order the task
        for rows in waits:                 # after the writer of the extent it reads
            for t, row in enumerate(rows):
                rows[t] = sorted(row, key=lambda k: k in runtime)
    grid_extent = tuple(None if d is None else (d, plan.program.grids[g].runtime_extent.axis)
                        for g, d in enumerate(space.grid_domain))
    return BoundEvents(plan, binding, exists, base, targets,
                       tuple(CSR.from_lists(w) for w in waits),
                       tuple(CSR.from_lists(n) for n in notifies),
                       tuple(space.domains), grid_extent, runtime)


def _runtime_counts(plan: EventPlan, exists, base) -> dict[int, tuple[int, int, int, int]]:
    """Per counter notified by a grid with a run-time extent: ``(extent, m, w0, w1)``, its
    producers being ``m`` tasks for each extent coordinate in ``[w0, w1)``."""
    space, out = plan.space, {}
    for eid, ev in enumerate(plan.events):
        domain = space.grid_domain[ev.producer]
        if domain is None:
            continue
        axis = plan.program.grids[ev.producer].runtime_extent.axis
        coords = space.coords[ev.producer][:, axis]
        alive = exists[ev.producer]
        for elem in range(ev.size):
            prods = ev.producers.row(elem)
            ws = coords[prods[alive[prods]]]
            if not len(ws):
                continue
            values, mult = np.unique(ws, return_counts=True)
            w0, w1 = int(values[0]), int(values[-1]) + 1
            if len(values) != w1 - w0 or (mult != mult[0]).any():
                raise ValueError(
                    f"event {ev.name}[{elem}]: its producers in "
                    f"{plan.program.grids[ev.producer].name} are not the same number of tasks "
                    f"for each item of a run of work items; a run-time count cannot express it")
            out[int(base[eid]) + elem] = (domain, int(mult[0]), w0, w1)
    return out


def _prune_implied(exists, targets, waits, notifies, runtime=None, bounded=None) -> None:
    """Drop every wait that other waits of the same task already imply at this binding.

    Derivation keeps a dependency unless it is implied under *every* binding; here the
    shape is known, so the reduction is exact: each remaining wait is necessary. Counters
    that nobody waits on any more are not notified either.

    Tasks of grids with a run-time extent (``bounded``) may not run, so nothing is implied
    through them: counters with run-time counts (``runtime``) neither imply nor are implied,
    and such tasks pass no ancestors on.
    """
    runtime = runtime or {}
    bounded = bounded or [False] * len(exists)
    ids: list[list[int]] = []          # per grid: local task -> global id (-1: absent)
    live: list[list[int]] = []         # per grid: the existing local tasks
    count = 0
    for ex in exists:
        live.append(np.nonzero(ex)[0].tolist())
        row = np.full(len(ex), -1, np.int64)
        row[live[-1]] = np.arange(count, count + len(live[-1]))
        ids.append(row.tolist())
        count += len(live[-1])
    producers: dict[int, list[int]] = {}
    for g, rows in enumerate(notifies):
        for t, row in enumerate(rows):
            for counter in row:
                producers.setdefault(counter, []).append(ids[g][t])
    # NOTE: ancestor sets are bitsets over a window of the last `window` task ids before
    # each task (bit 0 = task `base(t)`), not over all tasks: a path between a task and
    # its producer only runs through the tasks between them, so nothing below a task's
    # earliest producer matters, and whole-program bitsets made this quadratic (90 s for
    # a 36-layer model at 64 sequences x 4K).
    window = 0
    first_producer = {counter: min(ps) for counter, ps in producers.items()}
    for g, rows in enumerate(waits):
        for t in live[g]:
            firsts = [first_producer[c] for c in rows[t] if c in first_producer]
            if firsts:
                window = max(window, ids[g][t] - min(firsts))

    def base(task: int) -> int:
        return max(0, task - window)

    task_anc: list[int] = [0] * count       # in the frame base(task)
    counter_anc: dict[int, tuple[int, int, int]] = {}  # counter -> (frame, ancestors, producers)
    for g, rows in enumerate(waits):
        for t in live[g]:
            me = ids[g][t]
            frame = base(me)
            row = rows[t]
            ancs, prods = [], []
            for counter in row:
                if counter not in counter_anc:
                    ps = producers.get(counter, ())
                    cframe = base(max(ps)) if ps else frame
                    acc = bits = 0
                    for p in ps:
                        bits |= 1 << (p - cframe)
                        acc |= task_anc[p] >> (cframe - base(p))
                    counter_anc[counter] = (cframe, acc | bits, bits)
                cframe, acc, bits = counter_anc[counter]
                if counter in runtime:
                    acc = bits = 0
                ancs.append(acc >> (frame - cframe))
                prods.append(bits >> (frame - cframe))
            kept = list(range(len(row)))
            for i in range(len(row)):
                others = 0
                for j in kept:
                    if j != i:
                        others |= ancs[j]
                if prods[i] and prods[i] & ~others == 0:
                    kept.remove(i)
            rows[t] = [row[i] for i in kept]
            acc = 0
            for a in ancs:
                acc |= a
            task_anc[me] = 0 if bounded[g] else acc
    waited = {k for rows in waits for row in rows for k in row}
    for rows in notifies:
        for t, row in enumerate(rows):
            rows[t] = [k for k in row if k in waited]      # nobody waits: no notify
