"""Static verification of a bound program: happens-before covers every conflict.

Without running anything, for one binding of the symbols, it checks that
  * every counter's wait count equals the notifies it gets from existing tasks;
  * for every pair of conflicting accesses (read-after-write, write-after-read,
    write-after-write) in different grids, the earlier task happens-before the later
    one through the events;
  * no two tasks of one grid conflict (they are unordered);
  * every region a task reads from an activation was written by tasks ordered before it.

Run-time extents (MoE work items) make the tasks that run a data-dependent subset: for
value ``n`` of an extent, the tasks of its grids with item coordinate ``>= n`` do nothing
and notify nothing, and the counts of the counters they notify drop to match. The checks
hold for every value because
  * each run-time count equals, for every value in ``0..bound``, the notifies of the
    producers that run (checked);
  * happens-before is computed only through paths that exist whenever their first task
    runs: a path may pass a task of an extent's grid only if that task runs whenever the
    first one does (same extent, item no larger). For values under the bound, the tasks
    that run are a subset closed under those paths, so every ordering shown still holds;
  * a task of an extent's grid reads the extent before deciding, so the extent's writer is
    ordered before it through waits with counts known before the step (checked);
  * coverage of reads assumes the route's contract: work items past the extent hold no
    rows (the CPU twin asserts the bound, the tests run every routing kind).
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
    runtime = bound.runtime_counts
    item = _item_coords(bound)
    if runtime:
        notifiers: dict[int, list[int]] = {}
        for g, rows in enumerate(bound.notifies):
            if bound.grid_extent[g] is None:
                continue
            for t in bound.tasks(g):
                for k in rows.row(t):
                    if int(k) in runtime:
                        notifiers.setdefault(int(k), []).append(int(item[g][t]))
        for k in sorted(runtime):
            ws = np.asarray(notifiers.get(k, []), np.int64)
            top = int(ws.max()) + 2 if len(ws) else 1
            for value in range(top):
                if bound.runtime_target(k, value) != int((ws < value).sum()):
                    report.violations.append(
                        f"counter {k}: run-time count {bound.runtime_target(k, value)} at "
                        f"extent {value} but {int((ws < value).sum())} producers run")
                    break

    # 2. happens-before as ancestor bitsets over global task ids.
    # NOTE: each task's ancestors are kept over a window of the `window` task ids before it
    # (bit i = task base(t) + i): a path between two tasks only runs through the tasks
    # between them, and the window spans every conflicting pair (the grids of a conflict
    # lie within it). Whole-program bitsets made this quadratic in the layers (an MoE
    # model has ~10^4 tasks a layer).
    history_of = tracked_accesses(program)
    window = 1
    for tensor, history in history_of.items():
        for pos, (cg, _, _) in enumerate(history):
            for pg, _ in conflicting_earlier(space, history, pos, b):
                window = max(window, space.offsets[cg] + len(space.coords[cg]) - space.offsets[pg])
    writers = _extent_writers(bound)
    for g, ext in enumerate(bound.grid_extent or ()):
        for w_id in writers.get(ext, ()) if ext is not None else ():
            window = max(window, space.offsets[g] + len(space.coords[g]) - w_id)

    def base(task: int) -> int:
        return max(0, task - window)

    producers: dict[int, list[int]] = {}
    for g, rows in enumerate(bound.notifies):
        for t in bound.tasks(g):
            for k in rows.row(t):
                producers.setdefault(int(k), []).append(space.offsets[g] + int(t))
    # A path through a task of an extent's grid counts only for first tasks after which
    # that task surely runs: ``through(p)`` masks p's ancestors down to those.
    grid_of = np.repeat(np.arange(len(grids)), [len(c) for c in space.coords])
    domain_grids: dict[int, list[int]] = {}
    for g, ext in enumerate(bound.grid_extent or ()):
        if ext is not None:
            domain_grids.setdefault(ext[0], []).append(g)

    # The ids of a domain's tasks with item >= w: per grid, from its first such task on
    # (grids are item-major: the item is the first coordinate of an extent's grid).
    first_at = {g: np.searchsorted(item[g], np.arange(int(item[g].max()) + 2))
                for gs in domain_grids.values() for g in gs}

    def through(p: int) -> int:
        """p's ancestors (in p's frame) through which a path via p exists."""
        g = int(grid_of[p])
        if bound.grid_extent[g] is None:
            return anc.get(p, 0)
        w, frame, mask = int(item[g][p - space.offsets[g]]), base(p), 0
        for gg in domain_grids[bound.grid_extent[g][0]]:
            lo = max(int(space.offsets[gg] + first_at[gg][min(w, len(first_at[gg]) - 1)]), frame)
            hi = int(space.offsets[gg] + len(item[gg]))
            if hi > lo:
                mask |= ((1 << (hi - lo)) - 1) << (lo - frame)
        return anc.get(p, 0) & mask

    anc: dict[int, int] = {}              # task -> ancestors, in its frame base(task)
    before_known: dict[int, int] = {}     # ancestry through waits with counts known up front
    counter_anc: dict[int, tuple[int, int, int]] = {}    # counter -> (frame, anc, known)
    for g, rows in enumerate(bound.waits):
        for t in bound.tasks(g):
            me = space.offsets[g] + int(t)
            frame, acc, known = base(me), 0, 0
            for k in rows.row(t):
                k = int(k)
                if k not in counter_anc:
                    ps = producers.get(k, ())
                    cframe = base(max(ps)) if ps else frame
                    bits = kbits = 0
                    for p in ps:
                        own = 1 << (p - cframe) if p >= cframe else 0
                        bits |= own | (through(p) >> (cframe - base(p)))
                        kbits |= own | (before_known.get(p, 0) >> (cframe - base(p)))
                    counter_anc[k] = (cframe, bits, 0 if k in runtime else kbits)
                cframe, bits, kbits = counter_anc[k]
                acc |= bits >> (frame - cframe)
                known |= kbits >> (frame - cframe)
            anc[me] = acc
            before_known[me] = known
    _check_extent_guards(bound, before_known, base, writers, report)

    slices: dict[tuple[int, int], np.ndarray] = {}

    def before_all(pg: int, cg: int, c: int) -> np.ndarray:
        """[tasks of pg] bool: which happen before task c of grid cg."""
        key = (cg * (1 << 32) + int(c), pg)
        if key not in slices:
            n = len(space.coords[pg])
            me = space.offsets[cg] + int(c)
            shift = int(space.offsets[pg]) - base(me)
            bits = anc[me] >> shift if shift >= 0 else anc[me] << -shift
            bits &= (1 << n) - 1
            raw = np.frombuffer(bits.to_bytes((n + 7) // 8, "little"), np.uint8)
            slices[key] = np.unpackbits(raw, bitorder="little")[:n].astype(bool)
        return slices[key]

    # 3. conflicts between grids, and 4. inside a grid.
    for tensor, history in history_of.items():
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


def _item_coords(bound: BoundEvents) -> list[np.ndarray | None]:
    """Per grid with a run-time extent: each hull task's coordinate along it."""
    space = bound.plan.space
    return [None if ext is None else space.coords[g][:, ext[1]]
            for g, ext in enumerate(bound.grid_extent or (None,) * len(space.coords))]


def _extent_writers(bound: BoundEvents) -> dict[tuple[int, int], list[int]]:
    """Per run-time extent (domain, axis) of a grid: the global ids of the tasks that write
    its tensor."""
    if not bound.extents:
        return {}
    program, space = bound.plan.program, bound.plan.space
    by_tensor: dict[str, list[int]] = {}
    for g, grid in enumerate(program.grids):
        for acc in grid.writes():
            by_tensor.setdefault(acc.tensor, []).extend(
                int(space.offsets[g] + t) for t in bound.tasks(g))
    return {ext: by_tensor.get(bound.extents[ext[0]][0], [])
            for ext in set(bound.grid_extent) if ext is not None}


def _check_extent_guards(bound: BoundEvents, before_known: dict[int, int], base,
                         writers: dict[tuple[int, int], list[int]], report: Report) -> None:
    """Every task of an extent's grid is ordered after every writer of the extent through
    waits whose counts are known before the step (it reads the extent before the rest)."""
    program, space = bound.plan.program, bound.plan.space
    for g, ext in enumerate(bound.grid_extent or ()):
        if ext is None:
            continue
        for t in bound.tasks(g):
            me = space.offsets[g] + int(t)
            known = before_known[me]
            if any(not (known >> (w - base(me))) & 1 for w in writers[ext]):
                report.violations.append(
                    f"{program.grids[g].name}#{int(t)} reads its run-time extent "
                    f"{bound.extents[ext[0]][0]} without waiting (through counts known "
                    f"before the step) for its writer")
                break


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
