"""The wire format between host and megakernel, declared once.

Every struct the host writes and the kernel reads is a list of (name, C type) fields
here, and so are the CTA and tile constants both sides assume. :func:`c_header` emits the
C++ declarations (``include/wire.cuh``, with a static_assert on the size and the offset of
every field) and :attr:`Struct.dtype` / :meth:`Struct.pack` give the host encoding, so the
two sides cannot drift. Device pointers are 64-bit words on the host.

``include/wire.cuh`` is generated: after a change here, run
``python -m eventkernel.cuda.wire`` (tests/cpu/test_cuda_wire.py checks it is current).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eventkernel.lower import Target

_C_TO_NUMPY = {"unsigned short": np.uint16, "int": np.int32, "unsigned long long": np.uint64}
HEADER = Path(__file__).resolve().parent / "include" / "wire.cuh"


def _numpy_type(c_type: str):
    # NOTE: every pointer is a 64-bit device address on the host (the kernel is 64-bit).
    return np.uint64 if c_type.endswith("*") else _C_TO_NUMPY[c_type]


@dataclass(frozen=True)
class Struct:
    name: str
    fields: tuple[tuple[str, ...], ...]     # (field name, C type[, note]), in memory order
    doc: str

    @property
    def dtype(self) -> np.dtype:
        return np.dtype([(f[0], _numpy_type(f[1])) for f in self.fields], align=True)

    def c_decl(self) -> str:
        """The C++ struct, then static_asserts on its size and every field's offset."""
        body = "\n".join(f"    {f[1]} {f[0]};" + (f"  ///< {f[2]}" if len(f) > 2 else "")
                         for f in self.fields)
        dtype = self.dtype
        checks = [f"static_assert(sizeof({self.name}) == {dtype.itemsize}, "
                  f"\"{self.name}: host and device sizes differ\");"]
        # NOTE: NVRTC has no offsetof; nvcc (the CPU tests) checks the offsets, which the
        # two compilers lay out alike, and both check the size.
        checks.append("#ifndef __CUDACC_RTC__")
        checks += [f"static_assert(__builtin_offsetof({self.name}, {f[0]}) == "
                   f"{dtype.fields[f[0]][1]}, \"wire.py\");"
                   for f in self.fields]
        checks.append("#endif")
        return f"/// {self.doc}\nstruct {self.name} {{\n{body}\n}};\n" + "\n".join(checks) + "\n"

    def pack(self, records: list[dict[str, int]] | np.ndarray) -> np.ndarray:
        if isinstance(records, np.ndarray):
            return records.astype(self.dtype)
        out = np.zeros(len(records), self.dtype)
        for i, rec in enumerate(records):
            for field in self.fields:
                out[i][field[0]] = rec[field[0]]
        return out


# One queue entry: which template instantiation ("kind"), which of its grids ("slot":
# the per-grid pointer/shape table row), and the task's coordinates.
# 16 bytes, so a worker copies it into shared memory with one cp.async.
TASK_DESC = Struct("TaskDesc", (
    ("kind", "unsigned short"), ("slot", "unsigned short"), ("c0", "unsigned short"),
    ("c1", "unsigned short"), ("c2", "unsigned short"),
    ("num_waits", "unsigned short"),           # counters the task waits on
    ("num_notifies", "unsigned short"),        # counters it notifies
    ("extent", "unsigned short"),              # 0, or 1 + the run-time extent bounding c0
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
    ("wait_target", "unsigned long long"),      # int32[...] notifies that fire each; < 0:
                                                # -(1 + i), run-time count i (runtime_counts)
    ("notify_begin", "unsigned long long"),     # int32[num_entries + 1]
    ("notify_counter", "unsigned long long"),   # int32[...]
    ("extents", "unsigned long long"),          # const int*[...]: each run-time extent's value
    ("runtime_counts", "unsigned long long"),   # int4[...]: {extent, m, w0, w1}, the count
                                                # m * clamp(value - w0, 0, w1 - w0)
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
    ("trace", "unsigned long long"),            # TraceRecord[entries] when tracing, else 0
), "Pointers shared by every step.")

# The dynamic shape of one step, read by the kernel from device memory each step, so one
# compiled kernel serves every batch size and context length. Written by the host.
STEP_SHAPE = Struct("StepShape", (
    ("num_tokens", "int", "T: token rows this step"),
    ("num_seqs", "int", "S: sequences this step"),
    ("tokens", "const int*", "[T] token ids"),
    ("positions", "const int*", "[T] absolute positions"),
    ("query_start", "const int*", "[S + 1] first token row of each sequence"),
    ("context_lens", "const int*", "[S] keys per sequence, new tokens included"),
    ("block_table", "const int*", "[S, max_pages_per_seq] page ids"),
    ("max_pages_per_seq", "int"),
    ("slot_mapping", "const int*", "[T] KV slot (page * page_size + offset); < 0: no write"),
    ("logits_indices", "const int*", "[S] token row whose logits each sequence needs"),
), "The dynamic shape of one step: token and sequence counts, paged-KV metadata.")

# Written by the first wait of a debug build that timed out (events.cuh).
DEBUG_STATE = Struct("DebugState", (
    ("abort", "int", "nonzero once a wait timed out: all stop"),
    ("worker", "int", "blockIdx.x of the worker that timed out"),
    ("task", "int", "queue entry that waited"),
    ("event", "int", "counter it waited on"),
    ("observed", "int", "counter value seen last"),
    ("target", "int", "value it waited for"),
    ("reserved0", "int"),
    ("reserved1", "int"),
), "Where a debug build's bounded wait stopped (all zero while none did).")

# One per queue entry in a trace build (globaltimer nanoseconds), written by thread 0.
TRACE_RECORD = Struct("TraceRecord", (
    ("wait_start", "unsigned long long", "the worker took the entry, began waiting"),
    ("run_start", "unsigned long long", "its events fired"),
    ("end", "unsigned long long", "after its notifies"),
    ("sm", "unsigned long long", "%smid of the worker"),
), "Timestamps of one queue entry in a trace build.")

WIRE_STRUCTS = (TASK_DESC, ENTRY_EVENTS, BUCKET, RUNTIME, STEP_SHAPE, DEBUG_STATE, TRACE_RECORD)

# The CTA shape every task assumes and the token-row tile the lowering cuts for.
THREADS = 256                                   # threads per worker CTA (8 warps)
ROW_TILE = Target().rows_per_tile               # token rows per row tile
CONSTANTS = (
    ("kThreads", THREADS, "Threads per worker CTA; every task's prefetch()/run() is called "
                          "by all of them."),
    ("kRowTile", ROW_TILE, "Token rows per row tile (\"row tile r\" = rows [r * kRowTile, "
                           "min(T, (r + 1) * kRowTile)))."),
)


def c_declarations() -> str:
    """The C++ declarations of every wire struct and constant (in ``namespace ek``)."""
    constants = "\n".join(f"/// {doc}\nconstexpr int {name} = {value};"
                           for name, value, doc in CONSTANTS)
    return constants + "\n\n" + "\n".join(s.c_decl() for s in WIRE_STRUCTS)


def c_header() -> str:
    """The text of ``include/wire.cuh``."""
    return ("/**\n * @file wire.cuh\n * @brief The host/device wire format: every struct the "
            "host writes and the kernel\n *        reads, and the CTA and tile constants. "
            "GENERATED by eventkernel/cuda/wire.py\n *        (python -m eventkernel.cuda.wire)"
            ": do not edit by hand.\n */\n#pragma once\n\nnamespace ek {\n\n"
            + c_declarations() + "\n}  // namespace ek\n")


if __name__ == "__main__":
    HEADER.write_text(c_header())
    sys.stdout.write(f"wrote {HEADER}\n")
