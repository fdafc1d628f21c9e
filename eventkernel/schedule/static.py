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


def grid_seconds(bound: BoundEvents, target: Target) -> list[dict[int, float]]:
    """``task_seconds`` of every existing task, per grid and local task. A repeated layer's
    grids cost what the first layer's do (same tiles and shapes): computed once."""
    period = bound.plan.period
    out: list[dict[int, float]] = []
    for g in range(len(bound.plan.program.grids)):
        if period is not None and period.start + period.length <= g < period.end:
            out.append(out[period.start + (g - period.start) % period.length])
        else:
            out.append({t: task_seconds(bound, g, t, target) for t in bound.tasks(g).tolist()})
    return out


def static_schedule(bound: BoundEvents, num_workers: int, target: Target | None = None,
                    order: str = "cost") -> StaticSchedule:
    """List-schedule every existing task onto ``num_workers`` queues.

    ``order="cost"``: earliest-start placement by the cost model; ``"round_robin"``:
    task i of the topological order goes to worker i mod num_workers.
    """
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    target = target or bound.plan.program.meta["target"]
    seconds = grid_seconds(bound, target)
    finish_of_counter: dict[int, float] = {}
    free = [(0.0, w) for w in range(num_workers)]
    queues: list[list[tuple[int, int]]] = [[] for _ in range(num_workers)]
    makespan, i = 0.0, 0
    for g in range(len(bound.plan.program.grids)):
        waits, notifies, cost = bound.wait_lists[g], bound.notify_lists[g], seconds[g]
        for t in bound.tasks(g).tolist():
            ready = max((finish_of_counter.get(k, 0.0) for k in waits[t]), default=0.0)
            if order == "round_robin":
                w = i % num_workers
                start = max(ready, next(f for f, x in free if x == w))
                free = [(f if x != w else start, x) for f, x in free]
            else:
                free_at, w = heapq.heappop(free)
                start = max(free_at, ready)
            end = start + cost[t]
            if order == "round_robin":
                free = [(f if x != w else end, x) for f, x in free]
            else:
                heapq.heappush(free, (end, w))
            queues[w].append((g, t))
            for k in notifies[t]:
                if finish_of_counter.get(k, 0.0) < end:
                    finish_of_counter[k] = end
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
    counters = [0] * bound.num_counters
    targets = bound.targets.tolist()
    wait_lists, notify_lists = bound.wait_lists, bound.notify_lists
    heads = [0] * schedule.num_workers
    runnable = list(range(schedule.num_workers))
    remaining = sum(len(q) for q in schedule.queues)
    while runnable:
        progressed = []
        for w in runnable:
            q = schedule.queues[w]
            while heads[w] < len(q):
                g, t = q[heads[w]]
                if any(counters[k] < targets[k] for k in wait_lists[g][t]):
                    break
                for k in notify_lists[g][t]:
                    counters[k] += 1
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
