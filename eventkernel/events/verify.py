"""Static verification of a bound program: happens-before covers every conflict.

Without running anything, for one binding of the symbols, it checks that
  * every counter's wait count equals the notifies it gets from existing tasks;
  * for every pair of conflicting accesses (read-after-write, write-after-read,
    write-after-write) in different grids, the earlier task happens-before the later
    one through the events;
  * no two tasks of one grid conflict (they are unordered);
  * every region a task reads from an activation was written by tasks ordered before it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from eventkernel.events.bind import BoundEvents
from eventkernel.events.boxes import Boxes, covers, overlap
from eventkernel.events.derive import conflicting_earlier, tracked_accesses
from eventkernel.ir.graph import TensorKind


@dataclass
class Report:
    binding: dict[str, int]
    checked_pairs: int = 0
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def __str__(self) -> str:
        head = f"binding {self.binding}: {self.checked_pairs} conflicting task pairs checked"
        if self.ok:
            return head + ", verified"
        shown = "\n  ".join(self.violations[:10])
        more = f"\n  ... and {len(self.violations) - 10} more" if len(self.violations) > 10 else ""
        return f"{head}, {len(self.violations)} VIOLATIONS:\n  {shown}{more}"


def verify(bound: BoundEvents, max_violations: int = 100) -> Report:
    plan, b = bound.plan, bound.binding
    program, space = plan.program, plan.space
    report = Report(dict(b))
    grids = program.grids

    def task_name(g: int, t: int) -> str:
        coords = ",".join(str(int(v)) for v in space.coords[g][t])
        return f"{grids[g].name}({coords})"

    # 1. wait counts equal the notifies each counter receives.
    notified = np.zeros(bound.num_counters, np.int64)
    for g, rows in enumerate(bound.notifies):
        for t in bound.tasks(g):
            np.add.at(notified, rows.row(t), 1)
    waited = set()
    for g, rows in enumerate(bound.waits):
        for t in bound.tasks(g):
            waited.update(int(k) for k in rows.row(t))
    for k in sorted(waited):
        if notified[k] != bound.targets[k]:
            report.violations.append(f"counter {k}: wait count {bound.targets[k]} but "
                                     f"{notified[k]} notifies")

    # 2. happens-before as ancestor bitsets over global task ids.
    producers: dict[int, list[int]] = {}
    for g, rows in enumerate(bound.notifies):
        for t in bound.tasks(g):
            for k in rows.row(t):
                producers.setdefault(int(k), []).append(space.offsets[g] + int(t))
    anc = {}
    counter_anc: dict[int, int] = {}
    for g, rows in enumerate(bound.waits):
        for t in bound.tasks(g):
            acc = 0
            for k in rows.row(t):
                k = int(k)
                if k not in counter_anc:
                    bits = 0
                    for p in producers.get(k, ()):
                        bits |= (1 << p) | anc.get(p, 0)
                    counter_anc[k] = bits
                acc |= counter_anc[k]
            anc[space.offsets[g] + int(t)] = acc

    slices: dict[tuple[int, int], np.ndarray] = {}

    def before_all(pg: int, cg: int, c: int) -> np.ndarray:
        """[tasks of pg] bool: which happen before task c of grid cg."""
        key = (cg * (1 << 32) + int(c), pg)
        if key not in slices:
            n = len(space.coords[pg])
            bits = (anc[space.offsets[cg] + int(c)] >> int(space.offsets[pg])) & ((1 << n) - 1)
            raw = np.frombuffer(bits.to_bytes((n + 7) // 8, "little"), np.uint8)
            slices[key] = np.unpackbits(raw, bitorder="little")[:n].astype(bool)
        return slices[key]

    # 3. conflicts between grids, and 4. inside a grid.
    for tensor, history in tracked_accesses(program).items():
        for pos, (cg, ca, mode) in enumerate(history):
            mine = space.access_boxes(cg, ca, b)
            c_live = bound.exists[cg] & ~mine.empty
            for pg, pa in conflicting_earlier(space, history, pos, b):
                hit = overlap(mine, space.access_boxes(pg, pa, b))
                hit &= c_live[:, None] & bound.exists[pg][None, :]
                report.checked_pairs += int(hit.sum())
                for c in np.nonzero(hit.any(axis=1))[0]:
                    for p in np.nonzero(hit[c] & ~before_all(pg, cg, c))[0]:
                        kind = "read-after-write" if mode == "r" else "write-after-" + (
                            "write" if grids[pg].accesses[pa].mode == "w" else "read")
                        report.violations.append(
                            f"{kind} on {tensor}: {task_name(cg, c)} is not ordered after "
                            f"{task_name(pg, p)}")
            for oa, other in enumerate(grids[cg].accesses):
                if other.tensor != tensor or (mode == "r" and other.mode == "r"):
                    continue
                hit = overlap(mine, space.access_boxes(cg, oa, b))
                hit &= c_live[:, None] & c_live[None, :]
                np.fill_diagonal(hit, False)
                for c, p in zip(*np.nonzero(hit)):
                    report.violations.append(f"race on {tensor} inside {grids[cg].name}: "
                                             f"{task_name(cg, c)} and {task_name(cg, p)}")
            if len(report.violations) > max_violations:
                return report

    # 5. reads of activations are covered by earlier writes. Every earlier write that
    # overlaps a read was checked above to happen before it, so coverage by the union of
    # those writes is what remains to show.
    seg_counts = space.segment_counts(b)
    for tensor, history in tracked_accesses(program).items():
        if program.tensors[tensor].kind is TensorKind.STATE:
            continue
        for pos, (cg, ca, mode) in enumerate(history):
            if mode != "r":
                continue
            mine = space.access_boxes(cg, ca, b)
            writers = [(pg, pa) for pg, pa in conflicting_earlier(space, history, pos, b)
                       if grids[pg].accesses[pa].mode == "w"]
            cache: dict = {}
            live = np.nonzero(bound.exists[cg] & ~mine.empty)[0]
            if not len(live):
                continue
            if not mine.space[live].any():
                # Fast path: covering the hull of every read box covers each of them.
                hull = Boxes(mine.lo[live].min(0)[None], mine.hi[live].max(0)[None],
                             mine.space[live[:1]], mine.part[live[:1]])
                if _covered(space, b, bound, writers, hull, 0, seg_counts):
                    continue
            for c in live:
                key = (tuple(mine.lo[c]), tuple(mine.hi[c]), tuple(mine.space[c]),
                       tuple(mine.part[c]))
                if key not in cache:
                    cache[key] = _covered(space, b, bound, writers, mine, c, seg_counts)
                if not cache[key]:
                    report.violations.append(f"{task_name(cg, c)} reads {tensor} that no earlier "
                                             f"task wrote")
    return report


def _covered(space, b, bound, writers, mine, c, seg_counts) -> bool:
    parts = []
    for pg, pa in writers:
        wb = space.access_boxes(pg, pa, b)
        live = bound.exists[pg] & ~wb.empty
        parts.append((wb.lo[live], wb.hi[live], wb.space[live], wb.part[live]))
    if not parts or not sum(len(p[0]) for p in parts):
        return False
    writes = Boxes(*(np.concatenate([p[i] for p in parts]) for i in range(4)))
    return covers(writes, mine.lo[c].copy(), mine.hi[c].copy(), seg_counts, mine.space[c],
                  mine.part[c])
