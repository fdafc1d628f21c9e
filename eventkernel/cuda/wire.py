"""The wire format between host and megakernel, declared once.

Every struct the host writes and the kernel reads is a list of (name, C type) fields
here; :func:`c_struct` emits its C declaration (with a static_assert on the size) and
:func:`pack` / numpy dtypes give the host encoding, so the two sides cannot drift.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_C_TO_NUMPY = {"uint16_t": np.uint16, "int32_t": np.int32, "uint64_t": np.uint64}


@dataclass(frozen=True)
class Struct:
    name: str
    fields: tuple[tuple[str, str], ...]     # (field name, C type), in memory order
    doc: str

    @property
    def dtype(self) -> np.dtype:
        return np.dtype([(n, _C_TO_NUMPY[t]) for n, t in self.fields], align=True)

    def c_decl(self) -> str:
        body = "\n".join(f"    {t} {n};" for n, t in self.fields)
        return (f"/// {self.doc}\nstruct {self.name} {{\n{body}\n}};\n"
                f"static_assert(sizeof({self.name}) == {self.dtype.itemsize}, "
                f"\"{self.name}: host and device layouts differ\");\n")

    def pack(self, records: list[dict[str, int]] | np.ndarray) -> np.ndarray:
        if isinstance(records, np.ndarray):
            return records.astype(self.dtype)
        out = np.zeros(len(records), self.dtype)
        for i, rec in enumerate(records):
            for name, _ in self.fields:
                out[i][name] = rec[name]
        return out


# One queue entry: which template instantiation ("kind"), which of its grids ("slot":
# the per-grid pointer/shape table row), and the task's coordinates.
TASK_DESC = Struct("TaskDesc", (("kind", "uint16_t"), ("slot", "uint16_t"), ("c0", "uint16_t"),
                                ("c1", "uint16_t"), ("c2", "uint16_t"), ("pad", "uint16_t")),
                   "A task in a worker queue: template kind, grid slot, coordinates.")

# The per-bucket tables (device pointers) the kernel walks; one per shape bucket.
BUCKET = Struct("BucketTables", (
    ("queue", "uint64_t"),            # TaskDesc[num_entries], worker queues back to back
    ("queue_begin", "uint64_t"),      # int32[num_workers + 1]
    ("wait_begin", "uint64_t"),       # int32[num_entries + 1]
    ("wait_counter", "uint64_t"),     # int32[...] counter ids
    ("wait_target", "uint64_t"),      # int32[...] notifies that fire each
    ("notify_begin", "uint64_t"),     # int32[num_entries + 1]
    ("notify_counter", "uint64_t"),   # int32[...]
    ("num_counters", "int32_t"),
    ("num_workers", "int32_t"),
), "Static schedule and event tables of one shape bucket.")

# Global state of the runtime: counters (two parities), the step counter, debug state.
RUNTIME = Struct("RuntimeState", (
    ("counters", "uint64_t"),         # int32[2 * max_counters]
    ("max_counters", "int32_t"),
    ("pad0", "int32_t"),
    ("step", "uint64_t"),             # int32[2]: {step index, workers done}
    ("debug", "uint64_t"),            # DebugState* or 0
    ("buffers", "uint64_t"),          # uint64[num_buffers]: every tensor's device pointer
    ("shape", "uint64_t"),            # StepShape* (written by the host each step)
    ("trace", "uint64_t"),            # uint64[4 * entries] when tracing, else 0
), "Pointers shared by every step.")

WIRE_STRUCTS = (TASK_DESC, BUCKET, RUNTIME)


def c_declarations() -> str:
    return "\n".join(s.c_decl() for s in WIRE_STRUCTS)
