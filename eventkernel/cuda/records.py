"""One executed task of a timeline trace: the record the CUDA backend's trace build
produces (``CudaBackend.trace_records``) and :mod:`eventkernel.bench.trace` summarizes.

Time convention, per SM::

    ... idle ... | waiting on events (wait_ns) | running (start_ns .. end_ns) | ... idle ...
                 ^ start_ns - wait_ns          ^ start_ns                   ^ end_ns
"""
from __future__ import annotations

import dataclasses

RECORD_FIELDS = ("sm", "task_type", "coords", "start_ns", "end_ns", "wait_ns", "bytes")


@dataclasses.dataclass(frozen=True, slots=True)
class TaskRecord:
    """One executed task: where, what, and when (nanoseconds, any common origin)."""

    sm: int
    task_type: str
    coords: tuple[int, ...]
    start_ns: int
    end_ns: int
    wait_ns: int = 0
    bytes: int = 0

    def __post_init__(self) -> None:
        if self.end_ns < self.start_ns or self.wait_ns < 0:
            raise ValueError(f"task record with negative duration or wait: {self}")

    @property
    def run_ns(self) -> int:
        return self.end_ns - self.start_ns

    @property
    def arrive_ns(self) -> int:
        """When the SM took the task and began waiting on its events."""
        return self.start_ns - self.wait_ns
