"""How the CPU backend uses the machine: executor workers, torch threads, the tile target.

One plan for the whole process, so the executor's threads and torch's intra-op pool never
ask for more cores than there are: ``num_workers x torch_threads <= cores``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from eventkernel.lower.rules import Target

# NOTE: on the CPU a task's fixed cost is Python (a twin call, its waits and notifies:
# ~20-50 us), so one worker runs each op as one task: a linear's whole weight in one
# matmul, which torch spreads over the cores itself. Measured on 2 cores (built-in model,
# decode): the GPU tiling (1,155 tasks a step, 256-wide linear tiles) ran 3-4x slower.
CPU_MAX_TILE_N = 1 << 20


@dataclass(frozen=True, slots=True)
class CpuPlan:
    target: Target            # what the program is cut for on this machine
    num_workers: int          # executor worker threads
    torch_threads: int        # torch's intra-op threads, set by the backend once

    def __post_init__(self) -> None:
        if self.num_workers < 1 or self.torch_threads < 1:
            raise ValueError(f"a CPU plan needs >= 1 worker and torch thread, got "
                             f"{self.num_workers} and {self.torch_threads}")


def available_cores() -> int:
    """Cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:                 # not on Linux
        return max(1, os.cpu_count() or 1)


def cpu_plan(num_workers: int | None = None, cores: int | None = None) -> CpuPlan:
    """The plan for this machine. ``num_workers``: executor threads asked for (None: one,
    the fastest; more are for testing interleavings, and then tasks are cut finer so the
    workers have something to share). ``cores``: override the affinity mask's count."""
    cores = cores or available_cores()
    if num_workers is None or num_workers == 1:
        return CpuPlan(Target(num_workers=1, waves=1, max_tile_n=CPU_MAX_TILE_N), 1, cores)
    return CpuPlan(Target(num_workers=num_workers), num_workers,
                   max(1, cores // num_workers))
