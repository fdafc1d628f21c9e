"""Vectorised task regions: the boxes every task of a grid touches in one tensor."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from eventkernel.ir.symbols import Binding
from eventkernel.lower.grid import Access, Seg, TaskGrid

_SPACES: dict[str, int] = {}


def _space_id(name: str) -> int:
    return _SPACES.setdefault(name, len(_SPACES) + 1)


@dataclass(frozen=True)
class Boxes:
    """One box per task: ``lo``/``hi`` [n, ndim] ints, ``space``/``part`` [n, ndim] for
    data-dependent segments (space 0 = plain interval)."""

    lo: np.ndarray
    hi: np.ndarray
    space: np.ndarray
    part: np.ndarray

    @property
    def empty(self) -> np.ndarray:
        return ((self.hi <= self.lo) & (self.space == 0)).any(axis=1)


def boxes(grid: TaskGrid, access: Access, coords: np.ndarray, binding: Binding,
          extent: tuple[int, ...]) -> Boxes:
    """Regions of ``access`` for every task (row of ``coords``); a segment spans its dim's
    extent ``extent[d]`` (the tensor's shape under ``binding``)."""
    n, ndim = len(coords), len(extent)
    lo = np.zeros((n, ndim), np.int64)
    hi = np.zeros((n, ndim), np.int64)
    space = np.zeros((n, ndim), np.int64)
    part = np.zeros((n, ndim), np.int64)
    for i, c in enumerate(coords):
        for d, e in enumerate(access.region(tuple(int(v) for v in c), binding)):
            if isinstance(e, Seg):
                lo[i, d], hi[i, d] = 0, extent[d]
                space[i, d], part[i, d] = _space_id(e.space), e.index
            else:
                lo[i, d], hi[i, d] = e
    return Boxes(lo, hi, space, part)


def overlap(a: Boxes, b: Boxes) -> np.ndarray:
    """[len(a), len(b)] boolean: may task i of ``a`` and task j of ``b`` touch one element?

    Two segments of one partition overlap only if they are the same part; a segment and
    anything else may overlap wherever its dim's extent allows.
    """
    # NOTE: a dim takes few distinct (lo, hi, space, part) values per grid: each dim is
    # decided on the distinct values (a small table), then looked up per task pair. Most
    # pairs are decided by one selective dim (e.g. the sequence of an attention task), so
    # only its candidate pairs are looked up: a 64-sequence, 4K-context program has grids
    # of ~10^4 tasks, and the dense [n_a, n_b] comparisons took minutes.
    dims = []
    for d in range(a.lo.shape[1]):
        ua, ia = np.unique(np.stack([a.lo[:, d], a.hi[:, d], a.space[:, d], a.part[:, d]], 1),
                           axis=0, return_inverse=True)
        ub, ib = np.unique(np.stack([b.lo[:, d], b.hi[:, d], b.space[:, d], b.part[:, d]], 1),
                           axis=0, return_inverse=True)
        lo_a, hi_a, sp_a, pt_a = (ua[:, k, None] for k in range(4))
        lo_b, hi_b, sp_b, pt_b = (ub[None, :, k] for k in range(4))
        disjoint_parts = (sp_a == sp_b) & (sp_a > 0) & (pt_a != pt_b)
        table = (lo_a < hi_b) & (lo_b < hi_a) & ~disjoint_parts
        if not table.all():
            dims.append((table, ia.ravel(), ib.ravel()))
    live_a, live_b = ~a.empty, ~b.empty
    if not dims:
        return live_a[:, None] & live_b[None, :]
    # The candidate pairs of the most selective dim: a cartesian product per True entry.
    sizes = [(np.bincount(ia, minlength=t.shape[0]), np.bincount(ib, minlength=t.shape[1]))
             for t, ia, ib in dims]
    pairs = [int((table * (sa[:, None] * sb[None, :])).sum())
             for (table, _, _), (sa, sb) in zip(dims, sizes)]
    pick = int(np.argmin(pairs))
    (table, ia, ib), (size_a, size_b), total = dims[pick], sizes[pick], pairs[pick]
    if total * 4 > len(ia) * len(ib):     # not selective: dense
        result = live_a[:, None] & live_b[None, :]
        for table, ia, ib in dims:
            result &= table[ia[:, None], ib[None, :]]
        return result
    order_a, order_b = np.argsort(ia, kind="stable"), np.argsort(ib, kind="stable")
    start_a, start_b = np.r_[0, np.cumsum(size_a)], np.r_[0, np.cumsum(size_b)]
    us, vs = np.nonzero(table)
    na, nb = start_a[us + 1] - start_a[us], start_b[vs + 1] - start_b[vs]
    size = na * nb
    block = np.repeat(np.arange(len(us)), size)
    local = np.arange(total) - np.repeat(np.cumsum(size) - size, size)
    i = order_a[start_a[us][block] + local // nb[block]]
    j = order_b[start_b[vs][block] + local % nb[block]]
    keep = live_a[i] & live_b[j]
    for k, (table, ia, ib) in enumerate(dims):
        if k != pick:
            keep &= table[ia[i], ib[j]]
    result = np.zeros((len(ia), len(ib)), bool)
    result[i[keep], j[keep]] = True
    return result


def covers(writes: Boxes, read_lo: np.ndarray, read_hi: np.ndarray,
           segment_counts: dict[int, int], read_space: np.ndarray | None = None,
           read_part: np.ndarray | None = None) -> bool:
    """Do the write boxes cover the read box?

    A segment of the read is covered by writes of the same segment, or by writes that
    span the whole dim. A segment dim of the writes covers its whole extent when every
    part of its partition (``segment_counts[space]`` parts) is written with otherwise
    identical extents.
    """
    lo, hi = writes.lo.copy(), writes.hi.copy()
    space, part = writes.space.copy(), writes.part.copy()
    rlo, rhi = read_lo.copy(), read_hi.copy()
    keep = np.ones(len(lo), bool)
    ndim = len(rlo)
    for d in range(ndim):
        if read_space is None or read_space[d] == 0:
            continue
        if not (space[:, d] == read_space[d]).any():
            continue          # interval writes: they must cover the whole dim
        same = (space[:, d] == read_space[d]) & (part[:, d] == read_part[d])
        spans = (space[:, d] == 0) & (lo[:, d] <= rlo[d]) & (hi[:, d] >= rhi[d])
        keep &= same | spans
        lo[:, d], hi[:, d], space[:, d] = 0, 1, 0
        rlo[d], rhi[d] = 0, 1
    lo, hi, space, part = lo[keep], hi[keep], space[keep], part[keep]
    if (space > 0).any():
        groups: dict = {}
        for i in range(len(lo)):
            seg_dims = tuple(np.nonzero(space[i] > 0)[0])
            key = (seg_dims, tuple(space[i]), tuple(lo[i]), tuple(hi[i]))
            groups.setdefault(key, []).append(i)
        rows = []
        for (seg_dims, spaces, _, _), members in groups.items():
            parts = {tuple(part[i][list(seg_dims)]) for i in members}
            needed = 1
            for d in seg_dims:
                needed *= segment_counts.get(spaces[d], 0)
            if len(parts) >= needed > 0:
                rows.append(members[0])
        lo, hi = lo[rows], hi[rows]
    return _volume_covered(lo, hi, rlo, rhi)


def _volume_covered(lo: np.ndarray, hi: np.ndarray, rlo: np.ndarray, rhi: np.ndarray) -> bool:
    if (rhi <= rlo).any():
        return True
    clo, chi = np.maximum(lo, rlo), np.minimum(hi, rhi)
    live = (chi > clo).all(axis=1)
    clo, chi = clo[live], chi[live]
    if not len(clo):
        return False
    # Sweep over the distinct cut points of every dim: each cell must be inside a box.
    cuts = [np.unique(np.concatenate([[rlo[d], rhi[d]], clo[:, d], chi[:, d]]))
            for d in range(len(rlo))]
    grids = np.meshgrid(*[c[:-1] for c in cuts], indexing="ij")
    points = np.stack([g.ravel() for g in grids], axis=1)
    inside = ((points[:, None, :] >= clo[None]) & (points[:, None, :] < chi[None])).all(axis=2)
    return bool(inside.any(axis=1).all())
