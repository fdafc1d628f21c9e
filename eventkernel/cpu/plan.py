"""How the CPU backend uses the machine: executor workers, torch threads, the tile target.

One plan for the whole process, so the executor's threads and torch's intra-op pool never
ask for more cores than there are.
"""
from __future__ import annotations

from dataclasses import dataclass

from eventkernel.lower.rules import Target


@dataclass(frozen=True, slots=True)
class CpuPlan:
    target: Target            # what the program is cut for on this machine
    num_workers: int          # executor worker threads
    torch_threads: int | None  # torch.set_num_threads value (None: leave torch alone)


def cpu_plan(num_workers: int | None = None) -> CpuPlan:
    """The plan for this machine. ``num_workers``: executor threads asked for (None: the
    fastest choice; more are for testing interleavings)."""
    # NOTE: one worker is fastest on the CPU (threads only contend for the GIL and torch's
    # own pool); more are for testing interleavings.
    workers = num_workers or 1
    return CpuPlan(Target(num_workers=workers), workers, None)
