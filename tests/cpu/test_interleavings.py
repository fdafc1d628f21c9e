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


@pytest.mark.parametrize("dtype", ["bf16", "f32"])
def test_grouped_twin_calls_match_one_task_a_call(arch, dtype, monkeypatch):
    """One worker without jitter runs a run of KV-head tasks (rope, attention, merge) as one
    twin call; with jitter it runs them one by one. Same logits and caches, mixed step."""
    import eventkernel.cpu.executor as executor

    grouped_types = set()

    def recording(name, twin):
        def call(grid, coords, step):
            if any(isinstance(v, range) for v in coords):
                grouped_types.add(name)
            twin(grid, coords, step)
        return call

    monkeypatch.setattr(executor, "TWINS", {n: recording(n, t) for n, t in executor.TWINS.items()})
    compiled, weights, _ = tiny(arch, dtype)
    backend = CpuBackend(compiled, weights, num_workers=1)
    torch.manual_seed(0)
    for name in ("k_cache.0", "v_cache.0", "k_cache.1", "v_cache.1"):
        backend.buffers[name].normal_()
    before = {n: backend.buffers[n].clone() for n in ("k_cache.0", "v_cache.0")}
    step = mixed_step(compiled.limits)
    grouped = backend.run(step)
    assert grouped_types == {"rope_append", "attention", "attn_merge"}
    grouped_cache = backend.buffers["k_cache.1"].clone()
    for name, value in before.items():
        backend.buffers[name].copy_(value)
    backend.reseed(0)                           # jitter: the one-task-a-call path
    single = backend.run(step)
    assert torch.isfinite(grouped.logits).all()
    torch.testing.assert_close(grouped.logits, single.logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grouped_cache, backend.buffers["k_cache.1"], rtol=0, atol=0)
    assert torch.equal(grouped.next_tokens, single.next_tokens)


def test_one_worker_stuck_wait_names_task_and_event(arch):
    """A queue whose first task waits on a later one: the bounded wait raises EventTimeout
    naming the task and the event, instead of hanging."""
    import dataclasses

    from eventkernel.cpu.executor import EventTimeout, RunOptions, run_static
    from eventkernel.tasks import Step

    compiled, weights, _ = tiny(arch, "f32")
    backend = CpuBackend(compiled, weights, num_workers=1)
    step = mixed_step(compiled.limits)
    step.write(backend.buffers)
    schedule = compiled.static(compiled.bucket(step.num_tokens, step.num_seqs), 1)
    (queue,) = schedule.queues
    broken = dataclasses.replace(schedule, queues=(tuple(reversed(queue)),))
    twin_step = Step(step.num_tokens, step.num_seqs, backend.buffers, backend.row_dims)
    with pytest.raises(EventTimeout, match=r"task .+ waited 0 s on event .+ notifies"):
        run_static(broken, twin_step, RunOptions(timeout_s=0.2))
