"""The verifier proves the derived events and catches any one removed dependency."""
from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest

from eventkernel.events.bind import bind_events
from eventkernel.events.tensor import CSR
from eventkernel.events.verify import verify
from tests.cpu.conftest import tiny

BINDINGS = [{"T": 1, "S": 1}, {"T": 5, "S": 3}, {"T": 64, "S": 8}, {"T": 16, "S": 1}]


@pytest.mark.parametrize("binding", BINDINGS, ids=str)
def test_derived_events_verify(arch, binding):
    compiled, _, _ = tiny(arch)
    report = verify(bind_events(compiled.plan, binding))
    assert report.ok, str(report)
    assert report.checked_pairs > 0


def test_every_bucket_verifies(arch):
    """A step of any shape runs its bucket's tables (smaller shapes only skip work), so
    verifying every bucket covers every binding up to the maxima."""
    compiled, _, _ = tiny(arch)
    buckets = compiled.buckets()
    assert {"T": 64, "S": 8} in buckets and {"T": 1, "S": 1} in buckets and len(buckets) >= 20
    for bucket in buckets:
        report = verify(compiled.bound(bucket))
        assert report.ok, str(report)


def test_events_are_tile_granular(arch):
    """A consumer waits on the producer tiles it reads, not on the whole producer op."""
    compiled, _, _ = tiny(arch)
    plan = compiled.plan
    grids = plan.program.grids
    rope_from_qkv = next(e for e in plan.events if grids[e.consumer].task_type == "rope_append"
                         and grids[e.producer].name.endswith("qkv_proj"))
    qkv_tasks = grids[rope_from_qkv.producer].num_tasks(plan.program.max_binding)
    assert max(len(rope_from_qkv.producers.row(i)) for i in range(rope_from_qkv.size)) \
        < qkv_tasks
    attention_from_rope = next(e for e in plan.events
                               if grids[e.consumer].task_type == "attention")
    assert attention_from_rope.dims == ("kv_head",)
    assert str(attention_from_rope.wait_count) == "ceildiv(T, 64)"


def _without_wait(bound, grid, task, index):
    waits = list(bound.waits)
    rows = [list(waits[grid].row(t)) for t in range(len(waits[grid]))]
    del rows[task][index]
    waits[grid] = CSR.from_lists(rows)
    return dataclasses.replace(bound, waits=tuple(waits))


def _without_notify(bound, grid, task, index):
    notifies = list(bound.notifies)
    rows = [list(notifies[grid].row(t)) for t in range(len(notifies[grid]))]
    counter = rows[task].pop(index)
    notifies[grid] = CSR.from_lists(rows)
    targets = bound.targets.copy()
    targets[counter] -= 1                      # keep the count consistent: only the edge goes
    return dataclasses.replace(bound, notifies=tuple(notifies), targets=targets)


@pytest.mark.parametrize("binding", [{"T": 5, "S": 3}, {"T": 64, "S": 8}], ids=str)
def test_every_sampled_dependency_removal_is_caught(arch, binding):
    compiled, _, _ = tiny(arch)
    bound = bind_events(compiled.plan, binding)
    grids = compiled.program.grids
    waits = [(g, int(t), i) for g in range(len(grids)) for t in bound.tasks(g)
             for i in range(len(bound.waits[g].row(t)))]
    notifies = [(g, int(t), i) for g in range(len(grids)) for t in bound.tasks(g)
                for i in range(len(bound.notifies[g].row(t)))]
    rng = random.Random(0)
    by_kind: dict[str, list] = {}
    for w in waits:
        by_kind.setdefault(grids[w[0]].task_type, []).append(w)
    sample = [w for kind in by_kind.values() for w in rng.sample(kind, min(6, len(kind)))]
    kinds = {grids[g].task_type for g, _, _ in sample}
    assert {"linear", "rope_append", "attention", "attn_merge", "silu_mul"} <= kinds
    for g, t, i in sample:
        report = verify(_without_wait(bound, g, t, i), max_violations=1)
        assert not report.ok, f"removing wait {i} of {grids[g].name}#{t} was not caught"
    for g, t, i in rng.sample(notifies, 25):
        report = verify(_without_notify(bound, g, t, i), max_violations=1)
        assert not report.ok, f"removing notify {i} of {grids[g].name}#{t} was not caught"


def test_wrong_wait_count_is_caught(arch):
    compiled, _, _ = tiny(arch)
    bound = bind_events(compiled.plan, {"T": 5, "S": 3})
    targets = bound.targets.copy()
    used = next(int(k) for rows in bound.waits for k in rows.values)
    targets[used] += 1
    report = verify(dataclasses.replace(bound, targets=targets))
    assert any("wait count" in v for v in report.violations)
    assert np.any(targets != bound.targets)
