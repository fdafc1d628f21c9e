"""Timing on the GPU, and the memory-bandwidth floor a decode step is measured against.

``time_fn`` times each call between two CUDA events on the current stream, so the number is
what the GPU spent from the start of one step to its end, launch gaps included; on a CPU
device it falls back to ``time.perf_counter`` (for tests). Statistics are median and
p10/p90, never the mean alone: a decode step has a long tail (clock changes, other work).

``decode_bytes`` counts the bytes a decode step cannot avoid reading; ``floor_ms`` turns them
into the fastest possible step at a measured bandwidth (``measure_copy_bandwidth``).
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Any, Callable, Sequence

import torch

from eventkernel.models.config import ModelConfig

# NOTE: H100 L2 is 50 MiB; 256 MiB also exceeds every current GPU's L2 several times over.
L2_FLUSH_BYTES = 256 << 20


@dataclasses.dataclass(frozen=True, slots=True)
class Timing:
    """Per-call times in milliseconds."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    min_ms: float
    mean_ms: float
    iters: int

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float]) -> Timing:
        if not samples_ms:
            raise ValueError("no timing samples: iters must be at least 1")
        ordered = sorted(samples_ms)
        return cls(
            median_ms=statistics.median(ordered),
            p10_ms=_percentile(ordered, 0.10),
            p90_ms=_percentile(ordered, 0.90),
            min_ms=ordered[0],
            mean_ms=statistics.fmean(ordered),
            iters=len(ordered),
        )


def _percentile(ordered: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile of sorted values (numpy's default method)."""
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _is_cuda(device: Any) -> bool:
    return torch.device(device).type == "cuda"


def time_fn(
    fn: Callable[..., Any],
    warmup: int = 10,
    iters: int = 100,
    *,
    rotate_inputs: Sequence[Sequence[Any]] | None = None,
    before_each: Callable[[], None] | None = None,
    flush_l2: bool = False,
    device: Any = None,
) -> Timing:
    """Time ``fn`` ``iters`` times after ``warmup`` untimed calls.

    ``rotate_inputs``: argument tuples used in turn (``fn(*rotate_inputs[i % n])``) so that
    small inputs are not served from L2 across iterations; give enough copies to exceed L2.
    Real model weights already exceed L2 and need no rotation. ``before_each`` runs before
    every call outside the timed region (for instance a step's ``reset``). ``flush_l2``
    overwrites a 256 MiB buffer before each timed call. ``device`` defaults to CUDA if present.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    arg_sets = list(rotate_inputs) if rotate_inputs else [()]
    flush = torch.empty(L2_FLUSH_BYTES, dtype=torch.uint8, device=device) if flush_l2 else None

    def call(i: int) -> None:
        if before_each is not None:
            before_each()
        if flush is not None:
            flush.zero_()
        fn(*arg_sets[i % len(arg_sets)])

    for i in range(warmup):
        call(i)
    if not _is_cuda(device):
        samples = []
        for i in range(iters):
            if before_each is not None:
                before_each()
            start = time.perf_counter()
            fn(*arg_sets[i % len(arg_sets)])
            samples.append((time.perf_counter() - start) * 1e3)
        return Timing.from_samples(samples)

    torch.cuda.synchronize(device)
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    for i in range(iters):
        if before_each is not None:
            before_each()
        if flush is not None:
            flush.zero_()
        starts[i].record()
        fn(*arg_sets[i % len(arg_sets)])
        ends[i].record()
    torch.cuda.synchronize(device)
    return Timing.from_samples([s.elapsed_time(e) for s, e in zip(starts, ends)])


def measure_copy_bandwidth(device: Any, num_bytes: int = 1 << 30, iters: int = 50,
                           warmup: int = 5) -> float:
    """Device-to-device copy bandwidth in bytes/s: (bytes read + bytes written) / median time.

    ``num_bytes`` per buffer should be far larger than L2 (1 GiB by default).
    """
    device = torch.device(device)
    src = torch.empty(num_bytes, dtype=torch.uint8, device=device)
    src.fill_(1)
    dst = torch.empty_like(src)
    timing = time_fn(lambda: dst.copy_(src), warmup=warmup, iters=iters, device=device)
    return 2 * num_bytes / (timing.median_ms * 1e-3)


def floor_ms(num_bytes: float, bandwidth_bytes_per_s: float) -> float:
    """Milliseconds to move ``num_bytes`` at ``bandwidth_bytes_per_s``: the step's lower bound."""
    if bandwidth_bytes_per_s <= 0:
        raise ValueError(f"bandwidth must be positive, got {bandwidth_bytes_per_s}")
    return num_bytes / bandwidth_bytes_per_s * 1e3


def decode_bytes_breakdown(config: Any, num_tokens: int, context_len: int,
                           dtype_bytes: int = 2) -> dict[str, int]:
    """Bytes a decode step must read, by kind.

    ``num_tokens`` sequences each decode one token with ``context_len`` tokens cached:
    every layer weight once, embedding rows for the tokens used, the LM head whole (also
    when tied: it is read again at the end of the step), the final norm, and the K/V cache
    of every sequence. Activations and the new K/V writes are negligible and not counted.
    """
    shape = ModelConfig.from_hf(config)
    return {
        "layers": shape.num_layers * shape.layer_param_count() * dtype_bytes,
        "embedding_rows": min(num_tokens, shape.vocab_size) * shape.hidden_size * dtype_bytes,
        "lm_head": shape.vocab_size * shape.hidden_size * dtype_bytes,
        "final_norm": shape.hidden_size * dtype_bytes,
        "kv_cache": num_tokens * context_len * shape.kv_bytes_per_token(dtype_bytes),
    }


def decode_bytes(config: Any, num_tokens: int, context_len: int, dtype_bytes: int = 2) -> int:
    """Total bytes of ``decode_bytes_breakdown``."""
    return sum(decode_bytes_breakdown(config, num_tokens, context_len, dtype_bytes).values())
