"""Timeline traces of one decode step: Chrome/Perfetto JSON and a text summary.

A trace is one record per executed task (``TaskRecord``). Time convention, per SM::

    ... idle ... | waiting on events (wait_ns) | running (start_ns .. end_ns) | ... idle ...
                 ^ start_ns - wait_ns          ^ start_ns                   ^ end_ns

so a record occupies its SM over ``[start_ns - wait_ns, end_ns)``, and records of one SM must
not overlap. ``bytes`` is what the task moved (weights + activations), for achieved bandwidth.

Open the JSON from ``to_chrome_trace`` at https://ui.perfetto.dev (or chrome://tracing): one
track per SM, a slice per task named by its type, and a ``wait`` slice before it.
``python -m eventkernel.bench.trace TRACE.json[.gz]`` prints the summary of a written trace.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Sequence

# NOTE: the record type lives with the backend that produces it (layers import downwards);
# it is re-exported here.
from eventkernel.cuda.records import RECORD_FIELDS, TaskRecord  # noqa: F401


def as_records(records: Any) -> list[TaskRecord]:
    """``TaskRecord``s from TaskRecords, dicts, or a numpy structured array with RECORD_FIELDS."""
    names = getattr(getattr(records, "dtype", None), "names", None)
    if names is not None:
        missing = [f for f in RECORD_FIELDS[:5] if f not in names]
        if missing:
            raise ValueError(f"trace array lacks fields {missing}; it has {list(names)}")
        rows: Iterable[dict] = ({name: row[name] for name in names} for row in records)
    else:
        rows = records
    out = []
    for row in rows:
        if isinstance(row, TaskRecord):
            out.append(row)
            continue
        task_type = row["task_type"]
        if isinstance(task_type, bytes):
            task_type = task_type.decode()
        coords = row["coords"]
        coords = tuple(int(c) for c in coords) if hasattr(coords, "__len__") else (int(coords),)
        out.append(TaskRecord(sm=int(row["sm"]), task_type=str(task_type), coords=coords,
                              start_ns=int(row["start_ns"]), end_ns=int(row["end_ns"]),
                              wait_ns=int(row.get("wait_ns", 0)), bytes=int(row.get("bytes", 0))))
    return out


def to_chrome_trace(records: Any, path: str | Path, *, name: str = "decode step") -> dict:
    """Write a Chrome trace (``traceEvents``; ``ts``/``dur`` in µs from the step start).

    Each task is a complete event (``ph: "X"``, pid 0, tid = SM, name = task type, args =
    coords, wait and bytes) preceded by a ``wait`` event when it waited; ``ph: "M"`` metadata
    names the process and each SM's thread ``SM n``. Returns the written dict.
    """
    recs = as_records(records)
    origin = min((r.arrive_ns for r in recs), default=0)
    events: list[dict] = [{"name": "process_name", "ph": "M", "pid": 0, "args": {"name": name}}]
    for sm in sorted({r.sm for r in recs}):
        events.append({"name": "thread_name", "ph": "M", "pid": 0, "tid": sm,
                       "args": {"name": f"SM {sm}"}})
        events.append({"name": "thread_sort_index", "ph": "M", "pid": 0, "tid": sm,
                       "args": {"sort_index": sm}})
    for index, r in enumerate(recs):
        if r.wait_ns:
            events.append({"name": "wait", "cat": "wait", "ph": "X", "pid": 0, "tid": r.sm,
                           "ts": (r.arrive_ns - origin) / 1e3, "dur": r.wait_ns / 1e3,
                           "args": {"task": r.task_type, "coords": list(r.coords)}})
        events.append({"name": r.task_type, "cat": "task", "ph": "X", "pid": 0, "tid": r.sm,
                       "ts": (r.start_ns - origin) / 1e3, "dur": r.run_ns / 1e3,
                       "args": {"index": index, "coords": list(r.coords),
                                "wait_us": r.wait_ns / 1e3, "bytes": r.bytes}})
    trace = {"traceEvents": events, "displayTimeUnit": "ns"}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(trace))
    return trace


def from_chrome_trace(path: str | Path) -> list[TaskRecord]:
    """The task records of a trace written by ``to_chrome_trace`` (plain or gzipped JSON),
    in their original order; times in ns from the step start (to the ns the JSON keeps)."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        events = json.load(f)["traceEvents"]
    tasks = [e for e in events if e.get("ph") == "X" and e.get("cat") == "task"]
    tasks.sort(key=lambda e: e["args"]["index"])
    records = []
    for e in tasks:
        start = round(e["ts"] * 1e3)
        records.append(TaskRecord(sm=int(e["tid"]), task_type=e["name"],
                                  coords=tuple(e["args"]["coords"]), start_ns=start,
                                  end_ns=start + round(e["dur"] * 1e3),
                                  wait_ns=round(e["args"]["wait_us"] * 1e3),
                                  bytes=int(e["args"]["bytes"])))
    return records


@dataclasses.dataclass(frozen=True, slots=True)
class TaskTypeStats:
    task_type: str
    count: int
    mean_us: float  # running time, waits excluded
    mean_wait_us: float
    total_bytes: int
    gb_per_s: float  # bytes / running time of one task, averaged over the type's tasks


@dataclasses.dataclass(frozen=True, slots=True)
class SmStats:
    """Fractions of the step span; busy + waiting + idle == 1."""

    sm: int
    num_tasks: int
    busy: float
    waiting: float
    idle: float


PATH_ENDS = 4  # tasks shown at each end of a long critical path


@dataclasses.dataclass(frozen=True, slots=True)
class TraceSummary:
    span_ns: int
    task_types: tuple[TaskTypeStats, ...]
    sms: tuple[SmStats, ...]
    critical_path: tuple[int, ...]  # record indices, first to last
    critical_path_run_ns: int  # running time on the path; the rest of the span is waits/gaps

    def format(self, records: Sequence[TaskRecord] | None = None) -> str:
        lines = [f"step span {self.span_ns / 1e3:.1f} us, {len(self.sms)} SMs",
                 f"{'task type':<24}{'count':>7}{'mean us':>10}{'wait us':>10}{'GB/s':>9}"]
        for t in self.task_types:
            lines.append(f"{t.task_type:<24}{t.count:>7}{t.mean_us:>10.2f}"
                         f"{t.mean_wait_us:>10.2f}{t.gb_per_s:>9.1f}")
        busy = [s.busy for s in self.sms]
        waiting = [s.waiting for s in self.sms]
        lines.append(f"SM busy mean {sum(busy) / len(busy):.3f} (min {min(busy):.3f}), "
                     f"waiting mean {sum(waiting) / len(waiting):.3f}, idle mean "
                     f"{sum(s.idle for s in self.sms) / len(self.sms):.3f}")
        lines.append(f"critical path: {len(self.critical_path)} tasks, running "
                     f"{self.critical_path_run_ns / 1e3:.1f} us of {self.span_ns / 1e3:.1f} us")
        if records is not None and self.critical_path:
            # NOTE: a 64-token step's path has ~10^3 tasks: per type, then its ends.
            by_type: dict[str, list[int]] = {}
            for i in self.critical_path:
                by_type.setdefault(records[i].task_type, []).append(records[i].run_ns)
            lines.append("  on it: " + ", ".join(
                f"{kind} {len(runs)} tasks {sum(runs) / 1e3:.1f} us"
                for kind, runs in sorted(by_type.items(), key=lambda kv: -sum(kv[1]))))
            names = [f"{records[i].task_type}{list(records[i].coords)}@SM{records[i].sm}"
                     for i in self.critical_path]
            if len(names) > PATH_ENDS * 2 + 1:
                names = [*names[:PATH_ENDS], f"({len(names) - 2 * PATH_ENDS} more)",
                         *names[-PATH_ENDS:]]
            lines.append("  " + " -> ".join(names))
        return "\n".join(lines)


def summarize(records: Any, deps: Sequence[Sequence[int]] | None = None, *,
              quiet: bool = False) -> TraceSummary:
    """Per task type and per SM statistics, and the critical path; printed unless ``quiet``.

    ``deps[i]`` lists the record indices task ``i`` waited on. The critical path walks back
    from the last task to finish, each time to whichever predecessor (a dependency, or the
    previous task on the same SM) finished last. Without ``deps`` it is the task sequence of
    the SM that finished last.
    """
    recs = as_records(records)
    if not recs:
        raise ValueError("empty trace: no task records")
    if deps is not None and len(deps) != len(recs):
        raise ValueError(f"deps has {len(deps)} entries for {len(recs)} records")
    span_start = min(r.arrive_ns for r in recs)
    span_ns = max(r.end_ns for r in recs) - span_start
    by_sm = _tasks_by_sm(recs)

    types: dict[str, list[TaskRecord]] = defaultdict(list)
    for r in recs:
        types[r.task_type].append(r)
    type_stats = []
    for task_type, group in sorted(types.items()):
        run_ns = sum(r.run_ns for r in group)
        type_stats.append(TaskTypeStats(
            task_type=task_type, count=len(group), mean_us=run_ns / len(group) / 1e3,
            mean_wait_us=sum(r.wait_ns for r in group) / len(group) / 1e3,
            total_bytes=sum(r.bytes for r in group),
            gb_per_s=sum(r.bytes for r in group) / run_ns if run_ns else 0.0))

    sm_stats = []
    for sm, indices in sorted(by_sm.items()):
        busy = sum(recs[i].run_ns for i in indices) / span_ns if span_ns else 1.0
        waiting = sum(recs[i].wait_ns for i in indices) / span_ns if span_ns else 0.0
        sm_stats.append(SmStats(sm=sm, num_tasks=len(indices), busy=busy, waiting=waiting,
                                idle=1.0 - busy - waiting))

    path = _critical_path(recs, by_sm, deps)
    summary = TraceSummary(span_ns=span_ns, task_types=tuple(type_stats), sms=tuple(sm_stats),
                           critical_path=tuple(path),
                           critical_path_run_ns=sum(recs[i].run_ns for i in path))
    if not quiet:
        print(summary.format(recs))
    return summary


def _tasks_by_sm(recs: Sequence[TaskRecord]) -> dict[int, list[int]]:
    """Record indices per SM in time order; raises if two records of one SM overlap."""
    by_sm: dict[int, list[int]] = defaultdict(list)
    for index, r in enumerate(recs):
        by_sm[r.sm].append(index)
    for sm, indices in by_sm.items():
        indices.sort(key=lambda i: (recs[i].arrive_ns, recs[i].end_ns))
        for before, after in zip(indices, indices[1:]):
            if recs[after].arrive_ns < recs[before].end_ns:
                raise ValueError(
                    f"SM {sm}: task {after} ({recs[after].task_type}) starts waiting at "
                    f"{recs[after].arrive_ns} ns before task {before} ends at "
                    f"{recs[before].end_ns} ns; records of one SM must not overlap"
                )
    return by_sm


def _critical_path(recs, by_sm, deps) -> list[int]:
    last = max(range(len(recs)), key=lambda i: recs[i].end_ns)
    if deps is None:
        return list(by_sm[recs[last].sm])
    previous_on_sm = {}
    for indices in by_sm.values():
        previous_on_sm.update(zip(indices[1:], indices))
    path, current = [last], last
    on_path = {last}
    while True:
        for d in deps[current]:
            if not 0 <= d < len(recs):
                raise ValueError(f"deps[{current}] names record {d}; there are {len(recs)}")
        preds = list(deps[current])
        if current in previous_on_sm:
            preds.append(previous_on_sm[current])
        preds = [p for p in preds if p not in on_path]
        if not preds:
            break
        current = max(preds, key=lambda i: recs[i].end_ns)
        path.append(current)
        on_path.add(current)
    return path[::-1]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m eventkernel.bench.trace TRACE.json[.gz]", file=sys.stderr)
        return 2
    summary = summarize(from_chrome_trace(args[0]), quiet=True)
    print(summary.format())
    return 0


if __name__ == "__main__":
    sys.exit(main())
