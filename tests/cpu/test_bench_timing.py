"""Timing statistics and the floor (CPU fallback path; CUDA events need a GPU)."""

import pytest

from eventkernel.bench.timing import Timing, floor_ms, measure_copy_bandwidth, time_fn


def test_statistics():
    t = Timing.from_samples([5.0, 1.0, 2.0, 4.0, 3.0])
    assert (t.median_ms, t.min_ms, t.mean_ms, t.iters) == (3.0, 1.0, 3.0, 5)
    assert t.p10_ms == pytest.approx(1.4) and t.p90_ms == pytest.approx(4.6)
    with pytest.raises(ValueError, match="iters"):
        Timing.from_samples([])


def test_time_fn_rotates_inputs_and_resets():
    seen, resets = [], []
    t = time_fn(seen.append, warmup=2, iters=6, rotate_inputs=[("a",), ("b",), ("c",)],
                before_each=lambda: resets.append(1), device="cpu")
    assert t.iters == 6 and t.p10_ms <= t.median_ms <= t.p90_ms
    assert seen == ["a", "b", "a", "b", "c", "a", "b", "c"]
    assert len(resets) == 8


def test_floor():
    assert floor_ms(3e9, 3e12) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        floor_ms(1, 0)


def test_copy_bandwidth_runs_on_cpu():
    assert measure_copy_bandwidth("cpu", num_bytes=1 << 20, iters=3, warmup=1) > 0
