"""Random interleavings allowed by the events give bit-identical results."""
from __future__ import annotations

import pytest
import torch

from eventkernel.cpu.backend import CpuBackend
from eventkernel.engine.kv_cache import BlockManager
from eventkernel.engine.step import build_step
from tests.cpu.conftest import tiny

RUNS = 50


def mixed_step(limits):
    """Two sequences in prefill and three decoding, in one step."""
    blocks = BlockManager(limits.total_pages, limits.page_size, limits.pages_per_seq)
    chunks = [(0, 0, [1, 2, 3, 4, 5, 6, 7]), (1, 0, [9, 8]), (2, 5, [42]), (3, 17, [7]),
              (4, 2, [300])]
    for seq_id, cached, _ in chunks:
        blocks.allocate(seq_id, cached)
    return build_step(chunks, blocks)


@pytest.mark.parametrize("schedule", ["static", "dynamic"])
def test_random_interleavings_agree(arch, schedule):
    compiled, weights, _ = tiny(arch, "bf16")
    backend = CpuBackend(compiled, weights, num_workers=4, schedule=schedule)
    torch.manual_seed(0)
    for name in ("k_cache.0", "v_cache.0", "k_cache.1", "v_cache.1"):
        backend.buffers[name].normal_()            # some earlier context in the cache
    step = mixed_step(compiled.limits)
    reference = backend.run(step)
    assert torch.isfinite(reference.logits).all()
    for seed in range(RUNS):
        backend.reseed(seed)
        result = backend.run(step)
        assert torch.equal(result.logits, reference.logits), f"seed {seed} differs"
        assert torch.equal(result.next_tokens, reference.next_tokens)
