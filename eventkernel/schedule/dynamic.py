"""Dynamic scheduling: a ready queue fed when events fire.

The plan is data: for every counter, the tasks that wait on it; for every task, how
many of its counters must fire before it is ready; the tasks ready at the start.
"""
from __future__ import annotations

from dataclasses import dataclass

from eventkernel.events.bind import BoundEvents


@dataclass(frozen=True)
class DynamicPlan:
    bound: BoundEvents
    waiters: dict[int, tuple[tuple[int, int], ...]]    # counter -> tasks waiting on it
    pending: dict[tuple[int, int], int]                # task -> counters it waits on
    initial: tuple[tuple[int, int], ...]               # tasks with nothing to wait for


def dynamic_plan(bound: BoundEvents) -> DynamicPlan:
    waiters: dict[int, list[tuple[int, int]]] = {}
    pending: dict[tuple[int, int], int] = {}
    initial = []
    for g in range(len(bound.plan.program.grids)):
        for t in bound.tasks(g):
            task = (g, int(t))
            row = bound.waits[g].row(t)
            pending[task] = len(row)
            if not len(row):
                initial.append(task)
            for k in row:
                waiters.setdefault(int(k), []).append(task)
    return DynamicPlan(bound, {k: tuple(v) for k, v in waiters.items()}, pending, tuple(initial))
