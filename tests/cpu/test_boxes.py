"""overlap() equals the plain all-pairs comparison, on the dense and the sparse path."""
import numpy as np

from eventkernel.events.boxes import Boxes, overlap


def all_pairs(a: Boxes, b: Boxes) -> np.ndarray:
    result = ~a.empty[:, None] & ~b.empty[None, :]
    for d in range(a.lo.shape[1]):
        inter = (a.lo[:, None, d] < b.hi[None, :, d]) & (b.lo[None, :, d] < a.hi[:, None, d])
        same_space = (a.space[:, None, d] == b.space[None, :, d]) & (a.space[:, None, d] > 0)
        result &= inter & ~(same_space & (a.part[:, None, d] != b.part[None, :, d]))
    return result


def random_boxes(rng, n, ndim, width, spread):
    lo = rng.integers(0, spread, (n, ndim)) * width
    hi = lo + rng.integers(0, 3, (n, ndim)) * width
    space = rng.integers(0, 2, (n, ndim)) * rng.integers(1, 3, (n, ndim))
    return Boxes(lo, hi, space, rng.integers(0, 4, (n, ndim)))


def test_random_boxes():
    rng = np.random.default_rng(0)
    for _ in range(200):
        ndim, width, spread = int(rng.integers(1, 4)), int(rng.integers(1, 5)), \
            int(rng.choice([2, 20, 200]))  # 200: selective, the sparse path
        a = random_boxes(rng, int(rng.integers(1, 300)), ndim, width, spread)
        b = random_boxes(rng, int(rng.integers(1, 300)), ndim, width, spread)
        np.testing.assert_array_equal(overlap(a, b), all_pairs(a, b))


def test_tiles_one_to_one():
    n = 512
    lo = np.stack([np.arange(n) * 4, np.zeros(n, np.int64)], 1)
    zero = np.zeros((n, 2), np.int64)
    a = Boxes(lo, lo + [4, 8], zero, zero)
    b = Boxes(lo[::-1].copy(), lo[::-1] + [4, 8], zero, zero)
    hit = overlap(a, b)
    np.testing.assert_array_equal(hit, all_pairs(a, b))
    assert hit.sum() == n
