"""The CPU executor: worker threads that synchronise only through event counters.

It runs a bound program with either schedule, in random interleavings drawn from a
seed, on activations poisoned with NaN before each step. Waits are bounded: a stuck
wait raises :class:`EventTimeout` naming the task and the event.
"""
from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from eventkernel.events.bind import BoundEvents
from eventkernel.schedule.dynamic import DynamicPlan
from eventkernel.schedule.static import StaticSchedule
from eventkernel.tasks import GROUP_AXES, TWINS, Step


class EventTimeout(RuntimeError):
    """A task waited longer than the executor's bound on an event that never fired."""


@dataclass(frozen=True)
class RunOptions:
    seed: int | None = None            # None: no injected jitter
    timeout_s: float = 60.0
    jitter_s: float = 2e-4             # largest random pause before a task


class _Counters:
    def __init__(self, bound: BoundEvents, timeout_s: float, step: Step | None = None) -> None:
        self.bound = bound
        self.values = np.zeros(bound.num_counters, np.int64)
        self.cond = threading.Condition()
        self.timeout_s = timeout_s
        self.failed: BaseException | None = None
        # Run-time counts are written into this step's copy of the targets once the
        # extent they depend on is read (by a task ordered after its writer).
        self.targets = bound.targets.copy() if bound.has_runtime else bound.targets
        self.step = step
        self.extent_values: dict[int, int] = {}

    def extent(self, domain: int) -> int:
        """The value of run-time extent ``domain`` this step; read only by a task whose
        static waits order it after the extent's writer."""
        if domain not in self.extent_values:
            tensor, index = self.bound.extents[domain]
            self.extent_values[domain] = int(self.step.buffers[tensor].reshape(-1)[index])
        return self.extent_values[domain]

    def gate(self, g: int, t: int, coords: tuple[int, ...], who: Callable[[], str]) -> bool:
        """Wait for task ``t`` of grid ``g`` to be ready. False: its grid's run-time extent
        leaves it out this step (it runs nothing and notifies nothing)."""
        bound = self.bound
        waits = bound.waits[g].row(t)
        if not bound.has_runtime:
            self.wait(waits, who)
            return True
        split = bound.static_waits[g][t]
        self.wait(waits[:split], who)
        if bound.grid_extent[g] is not None:
            domain, axis = bound.grid_extent[g]
            if coords[axis] >= self.extent(domain):
                return False
        late = waits[split:]
        if len(late):
            for k in late.tolist():
                self.targets[k] = bound.runtime_target(k, self.extent(bound.runtime_counts[k][0]))
            self.wait(late, who)
        return True

    def describe(self, counter: int) -> str:
        base = self.bound.counter_base
        eid = int(np.searchsorted(base, counter, "right") - 1)
        ev = self.bound.plan.events[eid]
        grids = self.bound.plan.program.grids
        return (f"event {ev.name}[{counter - base[eid]}] ({grids[ev.producer].name} -> "
                f"{grids[ev.consumer].name}): {self.values[counter]} of "
                f"{self.targets[counter]} notifies")

    def ready(self, counters: np.ndarray) -> bool:
        return bool((self.values[counters] >= self.targets[counters]).all())

    def wait(self, counters: np.ndarray, who: Callable[[], str]) -> None:
        """Block until every counter reached its target; ``who`` names the waiting task
        (called only for the timeout's message)."""
        if self.ready(counters):            # the common case: no lock, no deadline
            return
        deadline = time.monotonic() + self.timeout_s
        with self.cond:
            while not self.ready(counters):
                if self.failed is not None:
                    raise RuntimeError("another worker failed") from self.failed
                left = deadline - time.monotonic()
                if left <= 0:
                    stuck = next(int(k) for k in counters
                                 if self.values[k] < self.targets[k])
                    raise EventTimeout(f"{who()} waited {self.timeout_s:.0f} s on "
                                       f"{self.describe(stuck)}")
                self.cond.wait(min(left, 0.05))

    def notify(self, counters: np.ndarray) -> None:
        with self.cond:
            np.add.at(self.values, counters, 1)
            self.cond.notify_all()

    def fail(self, err: BaseException) -> None:
        with self.cond:
            if self.failed is None:
                self.failed = err
            self.cond.notify_all()


def _coords(bound: BoundEvents, g: int, t: int) -> tuple[int, ...]:
    return tuple(int(v) for v in bound.plan.space.coords[g][t])


def _run_task(bound: BoundEvents, step: Step, g: int, t: int) -> None:
    grid = bound.plan.program.grids[g]
    TWINS[grid.task_type](grid, _coords(bound, g, t), step)


def _task_name(bound: BoundEvents, g: int, t: int) -> str:
    coords = ",".join(str(int(v)) for v in bound.plan.space.coords[g][t])
    return f"task {bound.plan.program.grids[g].name}({coords})"


def run_static(schedule: StaticSchedule, step: Step, options: RunOptions) -> None:
    """One thread per queue of ``schedule``."""
    bound = schedule.bound
    counters = _Counters(bound, options.timeout_s, step)

    def worker(w: int) -> None:
        rng = random.Random(None if options.seed is None else options.seed * 7919 + w)
        try:
            for g, t in schedule.queues[w]:
                if options.seed is not None:
                    time.sleep(rng.random() * options.jitter_s)
                if not counters.gate(g, t, _coords(bound, g, t),
                                     lambda: _task_name(bound, g, t)):
                    continue
                _run_task(bound, step, g, t)
                counters.notify(bound.notifies[g].row(t))
        except BaseException as err:  # noqa: BLE001 - re-raised in the caller
            counters.fail(err)

    if schedule.num_workers == 1 and options.seed is None:   # nothing to interleave
        _run_one_worker(schedule, step, counters)
        return
    if schedule.num_workers == 1:           # jittered, but still on this thread
        worker(0)
        if counters.failed is not None:
            raise counters.failed
        return
    _join([threading.Thread(target=worker, args=(w,), daemon=True)
           for w in range(schedule.num_workers)], counters)


def _run_one_worker(schedule: StaticSchedule, step: Step, counters: _Counters) -> None:
    """The one queue in order, on this thread. Of a task type with a group axis, a run of
    consecutive tasks of one grid (which never depend on each other) is computed as few
    twin calls: one per contiguous range along the axis, other coordinates equal."""
    bound = schedule.bound
    queue, i = schedule.queues[0], 0
    while i < len(queue):
        g = queue[i][0]
        grid = bound.plan.program.grids[g]
        axis, j = GROUP_AXES[grid.task_type], i + 1
        if axis is not None:
            while j < len(queue) and queue[j][0] == g:
                j += 1
        tasks = [t for _, t in queue[i:j]]
        if bound.has_runtime and len(tasks) == 1:   # an extent may leave the task out
            t = tasks[0]
            if counters.gate(g, t, _coords(bound, g, t), lambda: _task_name(bound, g, t)):
                _run_task(bound, step, g, t)
                counters.notify(bound.notifies[g].row(t))
            i = j
            continue
        if bound.has_runtime:
            for t in tasks:     # grouped grids have no extent: each task waits, late counts read
                counters.gate(g, t, _coords(bound, g, t), lambda: _task_name(bound, g, t))
            waits = np.zeros(0, np.int64)
            notifies = np.concatenate([bound.notifies[g].row(t) for t in tasks])
        elif len(tasks) == 1:
            waits, notifies = bound.waits[g].row(tasks[0]), bound.notifies[g].row(tasks[0])
        else:
            waits = np.concatenate([bound.waits[g].row(t) for t in tasks])
            notifies = np.concatenate([bound.notifies[g].row(t) for t in tasks])
        counters.wait(waits, lambda: _task_name(bound, g, tasks[0]) +
                      (f" and {len(tasks) - 1} more of its grid" if len(tasks) > 1 else ""))
        for coords in _grouped(bound.plan.space.coords[g], tasks, axis):
            TWINS[grid.task_type](grid, coords, step)
        counters.notify(notifies)
        i = j


def _grouped(all_coords: np.ndarray, tasks: list[int], axis: int | None) -> list[tuple]:
    """The coordinates of ``tasks`` with contiguous runs along ``axis`` (the others equal)
    folded into one ``range`` there."""
    coords = [tuple(int(v) for v in all_coords[t]) for t in tasks]
    if axis is None or len(coords) == 1:
        return coords
    by_rest: dict[tuple, list[int]] = {}
    for c in coords:
        by_rest.setdefault(c[:axis] + c[axis + 1:], []).append(c[axis])
    out = []
    for rest, values in by_rest.items():
        values.sort()
        start = values[0]
        for prev, nxt in zip(values, values[1:] + [None]):
            if nxt != prev + 1:                 # a run ends at prev
                run = start if prev == start else range(start, prev + 1)
                out.append(rest[:axis] + (run,) + rest[axis:])
                start = nxt
    return out


def run_dynamic(plan: DynamicPlan, num_workers: int, step: Step, options: RunOptions) -> None:
    """Workers pop tasks from one ready queue; a notify that fires an event pushes the
    tasks it made ready. The pop order is random when a seed is given."""
    bound = plan.bound
    if bound.has_runtime:
        raise ValueError("the dynamic schedule does not run programs with run-time extents "
                         "(MoE work items) yet; use schedule='static'")
    counters = _Counters(bound, options.timeout_s)
    ready = list(plan.initial)
    pending = dict(plan.pending)
    total = len(pending)
    done = [0]
    rng = random.Random(options.seed)

    def worker(w: int) -> None:
        try:
            while True:
                with counters.cond:
                    deadline = time.monotonic() + options.timeout_s
                    while not ready and done[0] < total:
                        if counters.failed is not None:
                            return
                        if time.monotonic() > deadline:
                            raise EventTimeout(f"worker {w}: no task became ready in "
                                               f"{options.timeout_s:.0f} s")
                        counters.cond.wait(0.05)
                    if done[0] >= total:
                        return
                    i = rng.randrange(len(ready)) if options.seed is not None else 0
                    g, t = ready.pop(i)
                _run_task(bound, step, g, t)
                with counters.cond:
                    for k in bound.notifies[g].row(t):
                        counters.values[k] += 1
                        if counters.values[k] == bound.targets[k]:
                            for task in plan.waiters.get(int(k), ()):
                                pending[task] -= 1
                                if pending[task] == 0:
                                    ready.append(task)
                    done[0] += 1
                    counters.cond.notify_all()
        except BaseException as err:  # noqa: BLE001
            counters.fail(err)

    _join([threading.Thread(target=worker, args=(w,), daemon=True)
           for w in range(num_workers)], counters)


def _join(threads: list[threading.Thread], counters: _Counters) -> None:
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if counters.failed is not None:
        raise counters.failed


def poison(buffers: dict[str, torch.Tensor], names: list[str]) -> None:
    """Fill intermediates with NaN (ints with -1) so a missing dependency shows."""
    for name in names:
        buf = buffers[name]
        buf.fill_(float("nan") if buf.is_floating_point() else -1)
