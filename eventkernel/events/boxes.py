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
    result = ~a.empty[:, None] & ~b.empty[None, :]
    for d in range(a.lo.shape[1]):
        # NOTE: a dim takes few distinct (lo, hi, space, part) values per grid: decide the
        # distinct pairs, then gather (a 64-token, 4K-context step has grids of ~10^4 tasks,
        # and the direct [n_a, n_b] comparisons took minutes).
        ua, ia = np.unique(np.stack([a.lo[:, d], a.hi[:, d], a.space[:, d], a.part[:, d]], 1),
                           axis=0, return_inverse=True)
        ub, ib = np.unique(np.stack([b.lo[:, d], b.hi[:, d], b.space[:, d], b.part[:, d]], 1),
                           axis=0, return_inverse=True)
        lo_a, hi_a, sp_a, pt_a = (ua[:, k, None] for k in range(4))
        lo_b, hi_b, sp_b, pt_b = (ub[None, :, k] for k in range(4))
        disjoint_parts = (sp_a == sp_b) & (sp_a > 0) & (pt_a != pt_b)
        table = (lo_a < hi_b) & (lo_b < hi_a) & ~disjoint_parts
        if table.all():
            continue
        result &= table[ia.ravel()[:, None], ib.ravel()[None, :]]
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
