"""Tile-shape rules: how big a task is, chosen from the machine, not per model.

The aim is enough tasks to keep every worker busy (a few waves on ~132 SMs) while each
task stays large enough to stream its weights at full bandwidth.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Target:
    """The machine the program is cut for."""

    num_workers: int = 132            # persistent CTAs (SMs) or CPU worker threads
    rows_per_tile: int = 64           # tokens a task handles (mma N-dim, <= 64 on the GPU)
    min_tile_n: int = 16              # output features per linear task (one mma M-tile)
    max_tile_n: int = 256             # TN=512 mma tiles need ~215 registers: spills
    waves: int = 4                    # at most waves * num_workers tasks per linear
    min_keys_per_split: int = 64      # split-KV granularity floor
    hbm_bytes_per_s: float = 3.0e12   # cost model: whole-device memory bandwidth
    flops_per_s: float = 7.0e14       # cost model: whole-device bf16 tensor rate
    task_overhead_s: float = 1.0e-6   # cost model: fetch + wait + notify per task

    def __post_init__(self) -> None:
        if self.num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {self.num_workers}")
        if self.rows_per_tile < 1:
            raise ValueError(f"rows_per_tile must be >= 1, got {self.rows_per_tile}")


def linear_tile_n(n: int, target: Target, k: int | None = None) -> int:
    """Output features per linear task: the smallest power of two >= min_tile_n that
    keeps the task count within ``waves * num_workers``, and that the GPU template can
    split ``k`` for (its 8 warps share K in steps of 16 when TN/16 < 8, so K must be a
    multiple of 16 * 8 / min(TN/16, 8))."""
    tile = target.min_tile_n
    while tile < target.max_tile_n and (
            math.ceil(n / tile) > target.waves * target.num_workers
            or (k is not None and k % (16 * 8 // min(tile // 16, 8)))):
        tile *= 2
    return min(tile, max(target.min_tile_n, _pow2_at_least(n)))


def elementwise_tile(n: int, target: Target, min_tile: int = 256) -> int:
    """Columns per task for cheap row-parallel ops: about one task per worker."""
    tile = min_tile
    while math.ceil(n / tile) > target.num_workers and tile < n:
        tile *= 2
    return tile


def kv_splits(num_kv_heads: int, max_context: int, target: Target) -> int:
    """Split-KV factor so that one decode sequence's attention fills the workers."""
    by_workers = max(1, target.num_workers // num_kv_heads)
    by_length = max(1, max_context // target.min_keys_per_split)
    return min(by_workers, by_length)


def _pow2_at_least(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())
