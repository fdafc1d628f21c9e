"""Static schedules are proven deadlock-free; a bad one is rejected."""
from __future__ import annotations

import dataclasses

import pytest

from eventkernel.compiler import compile_model
from eventkernel.lower import Target
from eventkernel.models.config import Limits, ModelConfig
from eventkernel.models.presets import preset_config
from eventkernel.schedule.static import DeadlockError, check_deadlock_free, static_schedule
from tests.cpu.conftest import tiny


@pytest.mark.parametrize("workers", [1, 7, 132])
def test_static_schedule_deadlock_free(arch, workers):
    compiled, _, _ = tiny(arch)
    for bucket in ({"T": 1, "S": 1}, {"T": 8, "S": 4}, {"T": 64, "S": 8}):
        schedule = compiled.static(bucket, workers)       # proves it, or raises
        assert sum(len(q) for q in schedule.queues) == sum(
            int(e.sum()) for e in schedule.bound.exists)
        assert schedule.num_workers == workers


def test_round_robin_is_deadlock_free(arch):
    compiled, _, _ = tiny(arch)
    schedule = static_schedule(compiled.bound({"T": 8, "S": 4}), 7, order="round_robin")
    check_deadlock_free(schedule)


def test_reordered_queue_deadlocks(arch):
    compiled, _, _ = tiny(arch)
    schedule = compiled.static({"T": 8, "S": 4}, 1)
    bad = dataclasses.replace(schedule, queues=(tuple(reversed(schedule.queues[0])),))
    with pytest.raises(DeadlockError, match="deadlocks"):
        check_deadlock_free(bad)


def test_full_size_preset_schedules_for_132_and_7_workers():
    config = ModelConfig.from_hf(preset_config("llama-3.2-1b"))
    compiled = compile_model(config, Limits(max_tokens=16, max_seqs=4, max_context=1024),
                             Target())
    for workers in (132, 7):
        schedule = compiled.static({"T": 1, "S": 1}, workers)
        assert schedule.predicted_s > 0
