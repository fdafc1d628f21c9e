"""Static scheduling: an ordered task queue per worker, from a cost model.

Tasks are taken in one global topological order (program order of grids, then task
order) and each goes to the worker that can start it earliest, given when that worker
is free and when the producers it waits on finish. Every queue is therefore a
subsequence of one topological order, which makes the schedule deadlock-free;
:func:`check_deadlock_free` proves it for any schedule by simulation.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

from eventkernel.events.bind import BoundEvents
from eventkernel.lower.rules import Target


@dataclass(frozen=True)
class StaticSchedule:
    bound: BoundEvents
    queues: tuple[tuple[tuple[int, int], ...], ...]    # per worker: (grid, local task)
    predicted_s: float                                 # cost-model makespan

    @property
    def num_workers(self) -> int:
        return len(self.queues)

    def dump(self, limit: int = 8) -> str:
        grids = self.bound.plan.program.grids
        lines = [f"static schedule: {self.num_workers} workers, predicted "
                 f"{self.predicted_s * 1e3:.3f} ms"]
        for w, q in enumerate(self.queues[:limit]):
            lines.append(f"  worker {w}: " + " ".join(f"{grids[g].task_type}#{t}" for g, t in q[:6])
                         + (" ..." if len(q) > 6 else ""))
        return "\n".join(lines)


def task_seconds(bound: BoundEvents, grid: int, task: int, target: Target) -> float:
    """Cost model: a worker gets 1/num_workers of the device's bandwidth and rate."""
    g = bound.plan.program.grids[grid]
    coords = tuple(int(v) for v in bound.plan.space.coords[grid][task])
    cost = g.cost(coords, bound.binding)
    share = target.num_workers
    return (max((cost.weight_bytes + cost.activation_bytes) * share / target.hbm_bytes_per_s,
                cost.flops * share / target.flops_per_s) + target.task_overhead_s)


def static_schedule(bound: BoundEvents, num_workers: int, target: Target | None = None,
                    order: str = "cost") -> StaticSchedule:
    """List-schedule every existing task onto ``num_workers`` queues.

    ``order="cost"``: earliest-start placement by the cost model; ``"round_robin"``:
    task i of the topological order goes to worker i mod num_workers.
    """
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    target = target or bound.plan.program.meta["target"]
    finish_of_counter: dict[int, float] = {}
    done_count: dict[int, int] = {}
    free = [(0.0, w) for w in range(num_workers)]
    queues: list[list[tuple[int, int]]] = [[] for _ in range(num_workers)]
    makespan, i = 0.0, 0
    for g in range(len(bound.plan.program.grids)):
        for t in bound.tasks(g):
            ready = max((finish_of_counter.get(int(k), 0.0) for k in bound.waits[g].row(t)),
                        default=0.0)
            if order == "round_robin":
                w = i % num_workers
                start = max(ready, next(f for f, x in free if x == w))
                free = [(f if x != w else start, x) for f, x in free]
            else:
                free_at, w = heapq.heappop(free)
                start = max(free_at, ready)
            end = start + task_seconds(bound, g, int(t), target)
            if order == "round_robin":
                free = [(f if x != w else end, x) for f, x in free]
            else:
                heapq.heappush(free, (end, w))
            queues[w].append((g, int(t)))
            for k in bound.notifies[g].row(t):
                k = int(k)
                finish_of_counter[k] = max(finish_of_counter.get(k, 0.0), end)
                done_count[k] = done_count.get(k, 0) + 1
            makespan, i = max(makespan, end), i + 1
    schedule = StaticSchedule(bound, tuple(tuple(q) for q in queues), makespan)
    check_deadlock_free(schedule)
    return schedule


class DeadlockError(RuntimeError):
    """A static schedule in which some worker would wait forever."""


def check_deadlock_free(schedule: StaticSchedule) -> None:
    """Prove the queues can all run to completion: simulate the workers, always letting
    any worker whose head task's events have fired run it. Counters only grow, so if
    this greedy run gets stuck, every run gets stuck (and vice versa)."""
    bound = schedule.bound
    counters = np.zeros(bound.num_counters, np.int64)
    heads = [0] * schedule.num_workers
    runnable = list(range(schedule.num_workers))
    remaining = sum(len(q) for q in schedule.queues)
    while runnable:
        progressed = []
        for w in runnable:
            q = schedule.queues[w]
            while heads[w] < len(q):
                g, t = q[heads[w]]
                waits = bound.waits[g].row(t)
                if (counters[waits] < bound.targets[waits]).any():
                    break
                np.add.at(counters, bound.notifies[g].row(t), 1)
                heads[w] += 1
                remaining -= 1
                progressed.append(w)
        runnable = [w for w in range(schedule.num_workers)
                    if heads[w] < len(schedule.queues[w])] if progressed else []
    if remaining:
        stuck = [(w, schedule.queues[w][heads[w]]) for w in range(schedule.num_workers)
                 if heads[w] < len(schedule.queues[w])]
        grids = bound.plan.program.grids
        desc = ", ".join(f"worker {w} at {grids[g].name}#{t}" for w, (g, t) in stuck[:5])
        raise DeadlockError(f"schedule deadlocks with {remaining} tasks left: {desc}")
