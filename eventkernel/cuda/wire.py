"""The wire format between host and megakernel, declared once.

Every struct the host writes and the kernel reads is a list of (name, C type) fields
here; :func:`c_struct` emits its C declaration (with a static_assert on the size) and
:func:`pack` / numpy dtypes give the host encoding, so the two sides cannot drift.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_C_TO_NUMPY = {"unsigned short": np.uint16, "int": np.int32, "unsigned long long": np.uint64}


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
# 16 bytes, so a worker copies it into shared memory with one cp.async.
TASK_DESC = Struct("TaskDesc", (
    ("kind", "unsigned short"), ("slot", "unsigned short"), ("c0", "unsigned short"),
    ("c1", "unsigned short"), ("c2", "unsigned short"),
    ("num_waits", "unsigned short"),           # counters the task waits on
    ("num_notifies", "unsigned short"),        # counters it notifies
    ("pad", "unsigned short"),
), "A task in a worker queue: template kind, grid slot, coordinates, event counts.")

# Per queue entry, next to its TaskDesc: the first wait and notify (most tasks have no
# other), so a worker fetches an entry with two 16-byte copies and no dependent loads.
ENTRY_EVENTS = Struct("EntryEvents", (
    ("counter0", "int"),                       # first counter waited on
    ("target0", "int"),                        # ... and the count that fires it
    ("notify0", "int"),                        # first counter notified
    ("pad", "int"),
), "The first wait and notify of a queue entry (others: the wait/notify tables).")

# The per-bucket tables (device pointers) the kernel walks; one per shape bucket.
BUCKET = Struct("BucketTables", (
    ("queue", "unsigned long long"),            # TaskDesc[num_entries + 1]: worker queues
                                                # back to back, then a pad entry
    ("events", "unsigned long long"),           # EntryEvents[num_entries + 1]
    ("queue_begin", "unsigned long long"),      # int32[num_workers + 1]
    ("wait_begin", "unsigned long long"),       # int32[num_entries + 1]
    ("wait_counter", "unsigned long long"),     # int32[...] counter ids
    ("wait_target", "unsigned long long"),      # int32[...] notifies that fire each
    ("notify_begin", "unsigned long long"),     # int32[num_entries + 1]
    ("notify_counter", "unsigned long long"),   # int32[...]
    ("num_counters", "int"),
    ("num_workers", "int"),
), "Static schedule and event tables of one shape bucket.")

# Global state of the runtime: counters (two parities), the step counter, debug state.
RUNTIME = Struct("RuntimeState", (
    ("counters", "unsigned long long"),         # int32[2 * max_counters]
    ("max_counters", "int"),
    ("pad0", "int"),
    ("step", "unsigned long long"),             # int32[2]: {step index, workers done}
    ("debug", "unsigned long long"),            # DebugState* or 0
    ("shape", "unsigned long long"),            # StepShape* (written by the host each step)
    ("trace", "unsigned long long"),            # uint64[8 * entries] when tracing, else 0
), "Pointers shared by every step.")

WIRE_STRUCTS = (TASK_DESC, ENTRY_EVENTS, BUCKET, RUNTIME)


def c_declarations() -> str:
    return "\n".join(s.c_decl() for s in WIRE_STRUCTS)
