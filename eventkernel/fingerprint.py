"""A stable hash of what the compiler produces: tasks, regions, events, wait counts, queues.

Refactors of the compiler must not change what it emits. ``fingerprint`` hashes, stage by
stage, every task grid (name, task type, grid, tile, and the region of every access of every
task at each bucket), the derived event tensors (maps, wait counts, producers), the bound
tables of each bucket (which tasks exist, counter targets, waits, notifies) and the static
schedule (every worker's queue and the predicted makespan). ``eventkernel inspect MODEL
--fingerprint`` prints it; ``tests/cpu/test_fingerprint.py`` checks recorded values.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from eventkernel.events.bind import BoundEvents
from eventkernel.events.derive import EventPlan
from eventkernel.events.tensor import CSR
from eventkernel.lower.grid import Program


@dataclass(frozen=True)
class Fingerprint:
    """One hash per stage, and the hash of them all."""

    tasks: str
    events: str
    buckets: dict[str, str]       # "T=..,S=.." -> hash of its regions, tables and queues

    @property
    def total(self) -> str:
        h = hashlib.sha256(self.tasks.encode() + self.events.encode())
        for key in sorted(self.buckets):
            h.update(f"{key}={self.buckets[key]}".encode())
        return h.hexdigest()[:16]

    def __str__(self) -> str:
        lines = [f"fingerprint {self.total}", f"  tasks   {self.tasks}", f"  events  {self.events}"]
        lines += [f"  {key:<10}{value}" for key, value in sorted(self.buckets.items())]
        return "\n".join(lines)


class _Hasher:
    def __init__(self) -> None:
        self._h = hashlib.sha256()

    def text(self, *parts: object) -> None:
        self._h.update(("|".join(str(p) for p in parts) + "\n").encode())

    def array(self, a: np.ndarray) -> None:
        a = np.ascontiguousarray(np.asarray(a).astype(np.int64))
        self._h.update(str(a.shape).encode())
        self._h.update(a.tobytes())

    def csr(self, c: CSR) -> None:
        self.array(c.offsets)
        self.array(c.values)

    def hexdigest(self) -> str:
        return self._h.hexdigest()[:16]


def _hash_program(program: Program) -> str:
    h = _Hasher()
    for name in sorted(program.tensors):
        t = program.tensors[name]
        h.text(name, tuple(str(d) for d in t.shape), t.dtype.value, t.kind.value)
    for g in program.grids:
        tile = sorted((k, repr(v)) for k, v in g.tile.items())
        h.text(g.index, g.name, g.task_type, g.node.name, tuple(str(d) for d in g.grid),
               g.coord_names, tile, tuple((a.tensor, a.mode) for a in g.accesses))
    h.text(sorted(program.maxima.items()))
    return h.hexdigest()


def _hash_events(plan: EventPlan) -> str:
    h = _Hasher()
    for ev in plan.events:
        h.text(ev.name, ev.producer, ev.consumer, tuple(str(d) for d in ev.shape), ev.dims,
               ev.wait_map.spec, ev.notify_map.spec, ev.wait_count)
        h.csr(ev.wait_map.table)
        h.csr(ev.notify_map.table)
        h.csr(ev.producers)
    return h.hexdigest()


def _hash_bucket(bound: BoundEvents, queues, predicted_s: float) -> str:
    h = _Hasher()
    program, space = bound.plan.program, bound.plan.space
    binding = bound.binding
    for g, grid in enumerate(program.grids):
        h.array(bound.exists[g])
        for t in bound.tasks(g).tolist():
            c = tuple(int(v) for v in space.coords[g][t])
            h.text(g, c, [a.region(c, binding) for a in grid.accesses], grid.cost(c, binding))
        h.csr(bound.waits[g])
        h.csr(bound.notifies[g])
    h.array(bound.counter_base)
    h.array(bound.targets)
    for q in queues:
        h.array(np.asarray(q, np.int64).reshape(-1, 2))
    h.text(repr(float(predicted_s)))
    return h.hexdigest()


def fingerprint(compiled, buckets: list[dict[str, int]], num_workers: int) -> Fingerprint:
    """The fingerprint of a compiled model at ``buckets``, scheduled on ``num_workers``."""
    out = {}
    for b in buckets:
        bucket = compiled.bucket(b["T"], b["S"])
        sched = compiled.static(bucket, num_workers)
        out[f"T={bucket['T']},S={bucket['S']}"] = _hash_bucket(sched.bound, sched.queues,
                                                                sched.predicted_s)
    return Fingerprint(_hash_program(compiled.program), _hash_events(compiled.plan), out)
