"""What the task modules share: the step a CPU twin runs in, Hugging Face's rounding of
RMSNorm and the MLP gating, and the region and row-set helpers of lowerings and bindings."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from eventkernel.ir.graph import Tensor
from eventkernel.ir.symbols import SEQS, Binding, Expr, evaluate
from eventkernel.lower.grid import Program, TaskGrid


@dataclass(frozen=True)
class Step:
    """The real shape of the step and the buffers every task reads and writes."""

    num_tokens: int
    num_seqs: int
    buffers: dict[str, torch.Tensor]
    row_dims: dict[str, object]          # tensor -> its first dim (int or expression)
    memo: dict = field(default_factory=dict, compare=False)   # per-step values twins share

    @property
    def binding(self) -> dict[str, int]:
        return {"T": self.num_tokens, "S": self.num_seqs}

    def rows(self, grid: TaskGrid, tensor: str, tile: int) -> range:
        n = evaluate(self.row_dims[tensor], self.binding)
        tm = grid.tile["TM"]
        return range(min(n, tile * tm), min(n, tile * tm + tm))


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Hugging Face's RMSNorm: normalise in fp32, round, scale by the weight."""
    xf = x.float()
    normed = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)
    return weight * normed


def silu_gate(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """Hugging Face's MLP gating: silu(gate) rounded to the dtype, times up."""
    return (F.silu(gate.float()).to(gate.dtype).float() * up.float()).to(gate.dtype)


def coord_run(coord: int | range) -> range:
    """A task coordinate as the run of tasks it stands for (a grouped twin call passes a
    range along its task type's ``group_axis``)."""
    return coord if isinstance(coord, range) else range(coord, coord + 1)


def row_slice(rows: range) -> slice:
    """A range of rows as a slice."""
    return slice(rows.start, rows.stop)


def tile_rows(tensor: Tensor, tm: int) -> Callable[[int, Binding], tuple[int, int]]:
    """Row tile ``r`` of ``tensor`` as an interval, clipped to its rows in ``binding``."""
    def rows(r: int, binding: Binding) -> tuple[int, int]:
        n = evaluate(tensor.shape[0], binding)
        return (min(n, r * tm), min(n, r * tm + tm))
    return rows


def span(lo: int, hi: int, n: int) -> tuple[int, int]:
    """The interval ``[lo, hi)`` clipped to ``n``."""
    return (min(lo, n), min(hi, n))


def length(interval: tuple[int, int]) -> int:
    """Elements in an interval (0 when empty)."""
    return max(0, interval[1] - interval[0])


def row_set(program: Program, tensor: str) -> str:
    """The CUDA ``RowSet`` of ``tensor``'s rows: one per sequence or one per token."""
    dim0 = program.tensors[tensor].shape[0]
    is_seqs = isinstance(dim0, Expr) and SEQS.args[0] in dim0.symbols
    return "RowSet::kSeqs" if is_seqs else "RowSet::kTokens"
