"""Derive event tensors from the tasks' read/write regions.

For every tensor that tasks write (activations, outputs, the KV cache) the derivation
walks its accesses in program order and makes each task depend on exactly the earlier
tasks whose regions conflict with its own: read-after-write, and write-after-read /
write-after-write where a buffer is reused. Dependencies already implied through other
events are dropped (transitive reduction), then consumers with the same producers share
one event element, so the events come out as tensors indexed by consumer coordinates.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from eventkernel.events.boxes import Boxes, boxes, covers, overlap
from eventkernel.events.period import Period, find_period, repeats_shifted, shifted
from eventkernel.events.tensor import CSR, EventTensor, IndexMap, WaitCount, expr_matches
from eventkernel.ir.graph import TensorKind
from eventkernel.ir.symbols import Binding, DimLike, evaluate, is_static
from eventkernel.lower.grid import Program

TRACKED = (TensorKind.ACTIVATION, TensorKind.OUTPUT, TensorKind.STATE)
MIN_BINDING = {"T": 1, "S": 1}


@dataclass
class TaskSpace:
    """Every task of the program at the hull binding (each symbol at its maximum)."""

    program: Program
    coords: list[np.ndarray] = field(default_factory=list)    # per grid [n, ndim]
    offsets: list[int] = field(default_factory=list)          # global id of local task 0
    total: int = 0
    _boxes: dict = field(default_factory=dict, repr=False)

    domains: list[tuple[str, int]] = field(default_factory=list)   # run-time extents
    grid_domain: list[int | None] = field(default_factory=list)     # per grid

    def __post_init__(self) -> None:
        hull = self.program.max_binding
        for g in self.program.grids:
            key = None if g.runtime_extent is None else (g.extent_tensor, g.runtime_extent.index)
            if key is not None and key not in self.domains:
                self.domains.append(key)
            self.grid_domain.append(None if key is None else self.domains.index(key))
            ext = g.extents(hull)
            self.coords.append(np.indices(ext).reshape(len(ext), -1).T.astype(np.int64)
                               if ext else np.zeros((1, 0), np.int64))
            self.offsets.append(self.total)
            self.total += len(self.coords[-1])

    def thresholds(self, grid: int) -> np.ndarray:
        """[n, num_symbols + num_domains]: the smallest value of each symbol under which a
        task exists, then of each run-time extent (0 for tasks no extent bounds)."""
        g, names = self.program.grids[grid], sorted(self.program.maxima)
        thr = np.ones((len(self.coords[grid]), len(names) + len(self.domains)), np.int64)
        thr[:, len(names):] = 0
        domain = self.grid_domain[grid]
        if domain is not None:
            thr[:, len(names) + domain] = self.coords[grid][:, g.runtime_extent.axis] + 1
        for d, extent in enumerate(g.grid):
            if is_static(extent):
                continue
            (name,) = extent.symbols
            top = self.program.maxima[name]
            values = np.array([evaluate(extent, {name: v}) for v in range(1, top + 1)])
            first = np.searchsorted(values, self.coords[grid][:, d], side="right") + 1
            col = names.index(name)
            thr[:, col] = np.maximum(thr[:, col], first)
        return thr

    def exists(self, grid: int, binding: Binding) -> np.ndarray:
        ext = np.asarray(self.program.grids[grid].extents(binding), np.int64)
        return (self.coords[grid] < ext).all(axis=1)

    def segment_counts(self, binding: Binding) -> dict[int, int]:
        from eventkernel.events.boxes import _space_id
        from eventkernel.lower.grid import PAGES_OF_SEQ, ROWS_OF_SEQ, SLOTS_OF_ROWTILE
        rows = -(-binding["T"] // self.program.meta["target"].rows_per_tile)
        return {_space_id(ROWS_OF_SEQ): binding["S"], _space_id(PAGES_OF_SEQ): binding["S"],
                _space_id(SLOTS_OF_ROWTILE): rows,
                **{_space_id(space): evaluate(parts, binding)
                   for space, parts in self.program.segments.items()}}

    def access_boxes(self, grid: int, access: int, binding: Binding) -> Boxes:
        key = (grid, access, tuple(sorted(binding.items())))
        if key not in self._boxes:
            self._boxes[key] = self._access_boxes(grid, access, binding)
        return self._boxes[key]

    def _access_boxes(self, grid: int, access: int, binding: Binding) -> Boxes:
        g = self.program.grids[grid]
        acc = g.accesses[access]
        extent = self.program.tensors[acc.tensor].concrete_shape(binding)
        return boxes(g, acc, self.coords[grid], binding, extent)


def tracked_accesses(program: Program) -> dict[str, list[tuple[int, int, str]]]:
    """Per written tensor, its accesses ``(grid, access, mode)`` in program order."""
    history: dict[str, list[tuple[int, int, str]]] = {}
    for gi, g in enumerate(program.grids):
        for ai, acc in enumerate(g.accesses):
            if program.tensors[acc.tensor].kind in TRACKED:
                history.setdefault(acc.tensor, []).append((gi, ai, acc.mode))
    return history


def conflicting_earlier(space: TaskSpace, history: list[tuple[int, int, str]], position: int,
                        binding: Binding) -> list[tuple[int, int]]:
    """Earlier accesses that conflict with ``history[position]``, back to the last writer
    whose writes cover everything this access touches."""
    key = ("conflicts", history[position], tuple(sorted(binding.items())))
    if key not in space._boxes:
        space._boxes[key] = _conflicting_earlier(space, history, position, binding)
    return space._boxes[key]


def _conflicting_earlier(space: TaskSpace, history: list[tuple[int, int, str]], position: int,
                         binding: Binding) -> list[tuple[int, int]]:
    gi, ai, mode = history[position]
    mine = space.access_boxes(gi, ai, binding)
    live = ~mine.empty
    if not live.any():
        return []
    lo, hi = mine.lo[live].min(axis=0), mine.hi[live].max(axis=0)
    found = []
    for pg, pa, pmode in reversed(history[:position]):
        if pg == gi or (mode == "r" and pmode == "r"):
            continue
        found.append((pg, pa))
        if pmode == "w" and covers(space.access_boxes(pg, pa, binding), lo, hi,
                                   space.segment_counts(binding)):
            break
    return found


class _Ancestry:
    """Ancestor bitsets (Python ints over global task ids) through event elements.

    A path only counts as implying a dependency if it exists under every binding under
    which its start exists: each intermediate task must exist whenever the start does
    (its thresholds are no larger). ``through(waits, thr)`` is what a task with those
    waits and thresholds passes on as an intermediate.
    """

    def __init__(self, space: TaskSpace) -> None:
        self.space = space
        self.element: dict[tuple[int, int], int] = {}     # (event, element) -> ancestors
        self.task_cache: dict[tuple, int] = {}
        self.thr = np.concatenate([space.thresholds(g) for g in range(len(space.coords))])
        self.masks: dict[tuple, int] = {}

    def through(self, waits: tuple, thr: tuple) -> int:
        key = (waits, thr)
        if key not in self.task_cache:
            if thr not in self.masks:
                self.masks[thr] = self.bits(np.nonzero((self.thr >= np.asarray(thr)).all(1))[0])
            self.task_cache[key] = self.task(waits) & self.masks[thr]
        return self.task_cache[key]

    def bits(self, ids: np.ndarray) -> int:
        if len(ids) < 256:
            return sum(1 << int(i) for i in ids)
        mask = np.zeros(self.space.total + 7, bool)
        mask[ids] = True
        return int.from_bytes(np.packbits(mask, bitorder="little").tobytes(), "little")

    def task(self, waits: tuple[tuple[int, int], ...]) -> int:
        acc = 0
        for key in waits:
            acc |= self.element[key]
        return acc


@dataclass(frozen=True)
class EventPlan:
    """The derived events of a program, materialised at the hull."""

    program: Program
    space: TaskSpace
    events: tuple[EventTensor, ...]
    period: Period | None = None       # the repeated layer block, where one was found

    def dump(self) -> str:
        return "\n".join(str(e) for e in self.events)


def derive_events(program: Program, periodic: bool = True) -> EventPlan:
    """Event tensors for ``program``: tile-granular, transitively reduced.

    ``periodic``: where the grids repeat (a model's layers) and the third repetition's
    events come out as the second's shifted, copy them shifted for every later repetition
    instead of deriving them (the same events: ``eventkernel/events/period.py``)."""
    space = TaskSpace(program)
    hull = program.max_binding
    history = tracked_accesses(program)
    ancestry = _Ancestry(space)
    classes: list[tuple[np.ndarray, list]] = []     # per grid: task -> (waits, thr) class
    events: list[EventTensor] = []
    period = find_period(program) if periodic else None
    events_of: dict[int, list[EventTensor]] = {}    # consumer grid -> its events
    copying = False
    for ci in range(len(program.grids)):
        n = len(space.coords[ci])
        if period is not None and ci == period.rep(3).start:
            copying = repeats_shifted(events_of, period)
        if copying and ci < period.end:
            new_events = [shifted(ev, period.length, len(events) + k)
                          for k, ev in enumerate(events_of[ci - period.length])]
        else:
            new_events = _derive_grid(ci, space, history, ancestry, classes, len(events))
        events_of[ci] = new_events
        waits: list[list[tuple[int, int]]] = [[] for _ in range(n)]
        for k, ev in enumerate(new_events):
            eid = len(events) + k
            for c in range(n):
                for elem in ev.wait_map.table.row(c):
                    waits[c].append((eid, int(elem)))
            p_classes, p_keys = classes[ev.producer]
            for elem in range(ev.size):
                prods = ev.producers.row(elem)
                acc_bits = ancestry.bits(prods + space.offsets[ev.producer])
                for cls in set(p_classes[prods].tolist()):  # (np.unique: 30 s per 10^5 calls)
                    acc_bits |= ancestry.through(*p_keys[cls])
                ancestry.element[(eid, elem)] = acc_bits
        events += new_events
        thr = space.thresholds(ci)
        keys = [(tuple(w), tuple(t)) for w, t in zip(waits, thr.tolist())]
        index = {k: i for i, k in enumerate(dict.fromkeys(keys))}
        classes.append((np.array([index[k] for k in keys], np.int64), list(index)))
    return EventPlan(program, space, tuple(events), period)


def _derive_grid(ci: int, space: TaskSpace, history: dict, ancestry: _Ancestry,
                 classes: list, first_eid: int) -> list[EventTensor]:
    """The events grid ``ci`` waits on, one per producer grid it still depends on after
    the transitive reduction."""
    hull = space.program.max_binding
    conflicts: dict[int, np.ndarray] = {}        # producer grid -> [n, n_producer] bool
    for ai, acc in enumerate(space.program.grids[ci].accesses):
        if acc.tensor not in history:
            continue
        hist = history[acc.tensor]
        mine = space.access_boxes(ci, ai, hull)
        for pg, pa in conflicting_earlier(space, hist, hist.index((ci, ai, acc.mode)), hull):
            hit = overlap(mine, space.access_boxes(pg, pa, hull))
            conflicts[pg] = conflicts[pg] | hit if pg in conflicts else hit
    kept = _reduce(conflicts, space, ancestry, classes)
    return [_event(ci, pg, rows, space, first_eid + k)
            for k, (pg, rows) in enumerate(sorted(kept.items()))]


def _reduce(conflicts: dict[int, np.ndarray], space: TaskSpace, ancestry: _Ancestry,
            classes: list) -> dict[int, np.ndarray]:
    """Drop each predecessor already implied by another one, for every binding.

    Predecessors are grouped in classes (same waits, same thresholds: same ancestry), so
    "implied" is a boolean product: rows x classes they touch, times classes x tasks each
    class's ancestry covers.
    """
    if not conflicts:
        return {}
    grids = sorted(conflicts)
    signature = np.concatenate([np.packbits(conflicts[g], axis=1) for g in grids], axis=1)
    first, inverse = unique_rows(signature)
    drop = {g: np.zeros((len(first), conflicts[g].shape[1]), bool) for g in grids}
    for source in grids:
        p_classes, p_keys = classes[source]
        touched = _classes_touched(conflicts[source][first], p_classes, len(p_keys))
        used = np.nonzero(touched.any(axis=0))[0]
        if not len(used):
            continue
        through = [ancestry.through(*p_keys[cls]) for cls in used]
        # NOTE: boolean products as loops over the classes: each row touches few of them,
        # and a float matmul of rows x classes x tasks took ~4 s per attention grid of a
        # 64-sequence, 4K-context program.
        touching = [np.flatnonzero(touched[:, cls]) for cls in used]   # rows per class
        for target in grids:
            n_p = conflicts[target].shape[1]
            for anc, rows_of in zip(through, touching):
                bits = (anc >> space.offsets[target]) & ((1 << n_p) - 1)
                if bits:
                    raw = np.frombuffer(bits.to_bytes((n_p + 7) // 8, "little"), np.uint8)
                    drop[target][rows_of] |= np.unpackbits(raw, bitorder="little")[:n_p] > 0
    rows = inverse.ravel()
    kept = {g: conflicts[g] & ~drop[g][rows] for g in grids}
    return {g: m for g, m in kept.items() if m.any()}


def _classes_touched(conflicts: np.ndarray, task_class: np.ndarray, n_classes: int
                     ) -> np.ndarray:
    """[rows, n_classes] bool: does the row conflict with any task of the class?"""
    if (task_class[1:] >= task_class[:-1]).all():  # classes in runs already: no copy
        order, ordered = slice(None), task_class
    else:
        order = np.argsort(task_class, kind="stable")
        ordered = task_class[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    touched = np.zeros((conflicts.shape[0], n_classes), bool)
    touched[:, ordered[starts]] = np.logical_or.reduceat(conflicts[:, order], starts, axis=1)
    return touched


def _event(ci: int, pg: int, rows: np.ndarray, space: TaskSpace, eid: int) -> EventTensor:
    """The event tensor between producer grid ``pg`` and consumer grid ``ci``, indexed by
    the consumer coordinates that decide which producers a consumer waits for."""
    program = space.program
    consumer = program.grids[ci]
    coords = space.coords[ci]
    # NOTE: rows packed 8 to a byte (big-endian bits keep the rows' lexicographic order,
    # so the same unique rows in the same order): 8x less to sort for 10^4-task grids.
    first, key = unique_rows(np.packbits(rows, axis=1))
    uniq, key = rows[first], key.ravel()
    dims = _deciding_dims(coords, key)
    ext = consumer.extents(program.max_binding)
    flat = (np.ravel_multi_index(tuple(coords[:, d] for d in dims), tuple(ext[d] for d in dims))
            if dims else np.zeros(len(coords), np.int64))
    size = int(np.prod([ext[d] for d in dims])) if dims else 1
    member_key = np.full(size, -1, np.int64)
    member_key[flat] = key
    members = [np.nonzero(uniq[k])[0] if k >= 0 else np.zeros(0, np.int64) for k in member_key]
    wait_rows = [[int(flat[c])] if rows[c].any() else [] for c in range(len(coords))]
    notify_rows: list[list[int]] = [[] for _ in range(len(space.coords[pg]))]
    for elem, m in enumerate(members):
        for p in m:
            notify_rows[p].append(elem)
    names = consumer.coord_names
    enames = [names[d] for d in dims]
    ev = EventTensor(
        name=f"E{eid}", producer=pg, consumer=ci, shape=tuple(consumer.grid[d] for d in dims),
        dims=tuple(enames),
        wait_map=IndexMap(f"{','.join(names)}->{','.join(enames)}", CSR.from_lists(wait_rows)),
        notify_map=IndexMap(_notify_spec(program.grids[pg].coord_names, space.coords[pg],
                                         notify_rows, coords, dims, flat, enames),
                            CSR.from_lists(notify_rows)),
        wait_count=WaitCount(None, runtime=program.grids[pg].runtime_extent is not None),
        producers=CSR.from_lists(members))
    return _with_count_expr(ev, space)


def unique_rows(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(packed, axis=0, return_index=True, return_inverse=True)[1:]`` for a 2-D
    uint8 array: the first row of each distinct row, in lexicographic order of the rows,
    and each row's index among them."""
    # NOTE: by the rows' bytes in a dict: np.unique sorts every row (6 s for the ~10^4 x
    # 10^4 conflict matrices of an MoE layer's expert grids, where most rows are equal).
    packed = np.ascontiguousarray(packed)
    seen: dict[bytes, int] = {}
    row_key = [seen.setdefault(row.tobytes(), len(seen)) for row in packed]
    order = sorted(seen, key=lambda k: k)
    rank = np.empty(len(seen), np.int64)
    rank[[seen[k] for k in order]] = np.arange(len(order))
    inverse = rank[np.asarray(row_key, np.int64)] if row_key else np.zeros(0, np.int64)
    first = np.full(len(order), -1, np.int64)
    first[inverse[::-1]] = np.arange(len(inverse))[::-1]
    return first, inverse


def _deciding_dims(coords: np.ndarray, key: np.ndarray) -> tuple[int, ...]:
    dims = list(range(coords.shape[1]))
    for d in list(dims):
        trial = [x for x in dims if x != d]
        if _determines(coords[:, trial], key):
            dims = trial
    return tuple(dims)


def _determines(cols: np.ndarray, key: np.ndarray) -> bool:
    if cols.shape[1] == 0:
        return len(np.unique(key)) <= 1
    pairs = np.unique(np.column_stack([cols, key]), axis=0)
    return len(pairs) == len(np.unique(cols, axis=0))


def _notify_spec(pnames, pcoords, notify_rows, ccoords, dims, flat, enames) -> str:
    """An einsum-like string if each element coordinate is a producer coordinate (or that
    coordinate floor-divided by a constant); 'table' otherwise."""
    if any(len(r) != 1 for r in notify_rows if r) or not any(notify_rows):
        return "table" if any(len(r) > 1 for r in notify_rows) else \
            f"{','.join(pnames)}->" + ",".join(enames)
    rows = [(p, r[0]) for p, r in enumerate(notify_rows) if r]
    elem_coord = {}
    for c in range(len(ccoords)):
        elem_coord[int(flat[c])] = ccoords[c, list(dims)]
    terms = []
    for j, en in enumerate(enames):
        target = np.array([elem_coord[e][j] for _, e in rows])
        found = None
        for d, pn in enumerate(pnames):
            src = pcoords[[p for p, _ in rows], d]
            for k in (1, 2, 4, 8, 16, 32, 64, 128):
                if (src // k == target).all():
                    found = pn if k == 1 else f"{pn}//{k}"
                    break
            if found:
                break
        if not found:
            return "table"
        terms.append(found)
    return f"{','.join(pnames)}->{','.join(terms)}"


def _with_count_expr(ev: EventTensor, space: TaskSpace) -> EventTensor:
    """Express the wait count as one expression of the symbols when the producer sets
    are full products along the producer grid's dims."""
    program = space.program
    pgrid = program.grids[ev.producer]
    hull = pgrid.extents(program.max_binding)
    pcoords = space.coords[ev.producer]
    exprs = set()
    for elem in range(ev.size):
        prods = ev.producers.row(elem)
        if not len(prods):
            continue
        sub = pcoords[prods]
        expr: DimLike = 1
        size = 1
        for d in range(sub.shape[1]):
            vals = np.unique(sub[:, d])
            size *= len(vals)
            full = len(vals) == hull[d] and not is_static(pgrid.grid[d])
            expr = expr * pgrid.grid[d] if full else expr * len(vals)
        if size != len(prods):
            return ev
        exprs.add(expr if isinstance(expr, int) or not is_static(expr) else evaluate(expr, {}))
    if len(exprs) != 1:
        return ev
    expr = exprs.pop()
    checks = []
    for binding in (MIN_BINDING, program.max_binding):
        counts = ev.counts(space.exists(ev.producer, binding))
        waiting = np.nonzero(space.exists(ev.consumer, binding))[0]
        used = np.unique(np.concatenate([ev.wait_map.table.row(c) for c in waiting] + [[]]))
        checks.append((binding, counts[used.astype(np.int64)]))
    if not expr_matches(expr, checks):
        return ev
    return EventTensor(**{**ev.__dict__, "wait_count": WaitCount(expr, ev.wait_count.runtime)})
