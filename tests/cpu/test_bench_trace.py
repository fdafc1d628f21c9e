"""Timeline traces: Chrome JSON structure, per-SM fractions, critical path."""

import json
import random

import numpy as np
import pytest

from eventkernel.bench.trace import (TaskRecord, as_records, from_chrome_trace, summarize,
                                     to_chrome_trace)


def synthetic_trace(num_sms=4, tasks_per_sm=6, seed=0):
    """Tasks laid out per SM with random waits and gaps; deps on earlier-finishing tasks."""
    rng = random.Random(seed)
    records, deps = [], []
    for sm in range(num_sms):
        clock = 1_000_000 + rng.randint(0, 500)
        for i in range(tasks_per_sm):
            clock += rng.randint(0, 300)  # idle gap
            wait = rng.choice([0, rng.randint(1, 400)])
            start = clock + wait
            end = start + rng.randint(100, 2000)
            kind = ("gemv_qkv", "attention", "gemv_mlp")[i % 3]
            records.append(TaskRecord(sm, kind, (sm, i), start, end, wait, rng.randint(0, 1 << 20)))
            clock = end
    for index, r in enumerate(records):
        earlier = [j for j, q in enumerate(records) if q.end_ns <= r.start_ns - r.wait_ns]
        deps.append(rng.sample(earlier, min(2, len(earlier))))
    return records, deps


def test_chrome_trace_structure(tmp_path):
    records, _ = synthetic_trace()
    path = tmp_path / "step.json"
    to_chrome_trace(records, path)
    trace = json.loads(path.read_text())
    events = trace["traceEvents"]
    complete = [e for e in events if e["ph"] == "X"]
    assert len([e for e in complete if e.get("cat") == "task"]) == len(records)
    for event in complete:
        for key in ("name", "ts", "dur", "pid", "tid"):
            assert key in event, (key, event)
        assert event["pid"] == 0 and event["dur"] >= 0 and event["ts"] >= 0
    names = {e["tid"]: e["args"]["name"] for e in events
             if e["ph"] == "M" and e["name"] == "thread_name"}
    assert names == {sm: f"SM {sm}" for sm in range(4)}
    tasks = [e for e in complete if e["cat"] == "task"]
    assert {e["name"] for e in tasks} == {"gemv_qkv", "attention", "gemv_mlp"}
    first = records[0]
    event = next(e for e in tasks if e["args"]["index"] == 0)
    assert event["args"]["coords"] == list(first.coords)
    assert event["dur"] == pytest.approx((first.end_ns - first.start_ns) / 1e3)


def test_fractions_sum_to_one_and_types():
    records, _ = synthetic_trace(num_sms=8, seed=3)
    summary = summarize(records, quiet=True)
    assert len(summary.sms) == 8
    for sm in summary.sms:
        assert sm.busy + sm.waiting + sm.idle == pytest.approx(1.0, abs=1e-9)
        assert min(sm.busy, sm.waiting, sm.idle) >= 0
    counts = {t.task_type: t.count for t in summary.task_types}
    assert counts == {"gemv_qkv": 16, "attention": 16, "gemv_mlp": 16}
    qkv = [r for r in records if r.task_type == "gemv_qkv"]
    stats = next(t for t in summary.task_types if t.task_type == "gemv_qkv")
    run_ns = sum(r.end_ns - r.start_ns for r in qkv)
    assert stats.mean_us == pytest.approx(run_ns / len(qkv) / 1e3)
    assert stats.gb_per_s == pytest.approx(sum(r.bytes for r in qkv) / run_ns)


def test_exact_fractions_on_hand_trace():
    records = [TaskRecord(0, "a", (0,), 0, 50, 0), TaskRecord(0, "a", (1,), 70, 100, 10),
               TaskRecord(1, "b", (0,), 20, 40, 20)]
    summary = summarize(records, quiet=True)
    assert summary.span_ns == 100
    sm0, sm1 = summary.sms
    assert (sm0.busy, sm0.waiting, sm0.idle) == pytest.approx((0.8, 0.1, 0.1))
    assert (sm1.busy, sm1.waiting, sm1.idle) == pytest.approx((0.2, 0.2, 0.6))


def test_critical_path_through_deps():
    # SM0: a0 [0,10) ; SM1: b0 [0,30) ; SM0: a1 waits on b0, runs [30,40) ; SM2: c0 [0,5)
    records = [TaskRecord(0, "a", (0,), 0, 10), TaskRecord(1, "b", (0,), 0, 30),
               TaskRecord(0, "a", (1,), 30, 40, wait_ns=20), TaskRecord(2, "c", (0,), 0, 5)]
    deps = [[], [], [1, 3], []]
    summary = summarize(records, deps, quiet=True)
    assert summary.critical_path == (1, 2)
    assert summary.critical_path_run_ns == 40
    # Without deps: the SM that finished last, in order.
    assert summarize(records, quiet=True).critical_path == (0, 2)


def test_critical_path_is_a_chain_on_random_trace(capsys):
    records, deps = synthetic_trace(seed=5)
    summary = summarize(records, deps)
    assert "critical path" in capsys.readouterr().out
    path = summary.critical_path
    assert records[path[-1]].end_ns == max(r.end_ns for r in records)
    assert all(records[a].end_ns <= records[b].end_ns for a, b in zip(path, path[1:]))


def test_long_critical_path_is_printed_by_type_and_ends():
    # One SM running 50 tasks back to back: all of them are the critical path.
    records = [TaskRecord(0, "lin" if i % 5 else "attn", (i,), 10 * i, 10 * i + 10)
               for i in range(50)]
    summary = summarize(records, quiet=True)
    assert len(summary.critical_path) == 50
    text = summary.format(records)
    assert "on it: lin 40 tasks 0.4 us, attn 10 tasks 0.1 us" in text
    assert "attn[0]@SM0 -> lin[1]@SM0" in text and "(42 more)" in text
    assert text.rstrip().endswith("lin[49]@SM0")
    assert text.count("@SM") == 8


def test_numpy_structured_input_and_overlap_error():
    records, _ = synthetic_trace(num_sms=2, tasks_per_sm=3)
    dtype = [("sm", "i4"), ("task_type", "U16"), ("coords", "i4", (2,)), ("start_ns", "i8"),
             ("end_ns", "i8"), ("wait_ns", "i8"), ("bytes", "i8")]
    array = np.array([(r.sm, r.task_type, r.coords, r.start_ns, r.end_ns, r.wait_ns, r.bytes)
                      for r in records], dtype=dtype)
    assert as_records(array) == records
    overlapping = [TaskRecord(0, "a", (0,), 0, 50), TaskRecord(0, "a", (1,), 60, 90, 20)]
    with pytest.raises(ValueError, match="must not overlap"):
        summarize(overlapping, quiet=True)


def test_chrome_trace_reads_back(tmp_path):
    records, _ = synthetic_trace(seed=3)
    path = tmp_path / "t.json"
    to_chrome_trace(records, path)
    back = from_chrome_trace(path)
    origin = min(r.start_ns - r.wait_ns for r in records)
    assert [(r.sm, r.task_type, r.coords, r.start_ns - origin, r.end_ns - origin, r.wait_ns,
             r.bytes) for r in records] == \
        [(r.sm, r.task_type, r.coords, r.start_ns, r.end_ns, r.wait_ns, r.bytes) for r in back]


@pytest.mark.parametrize("name,tasks", [("2026-11-28-h100-qwen3-8b-trace", 51315),
                                        ("2026-11-28-h200-llama-3.2-1b-trace", 17670),
                                        ("2026-11-29-h200-qwen3-8b-trace", 51315)])
def test_committed_traces_are_valid(name, tasks):
    """The GPU traces in bench/results read back; every SM's fractions add up to one."""
    from pathlib import Path
    records = from_chrome_trace(Path(__file__).parents[2] / f"bench/results/{name}.json.gz")
    assert len(records) == tasks and {r.task_type for r in records} >= {"linear", "attention"}
    summary = summarize(records, quiet=True)
    assert len(summary.sms) == 132
    for sm in summary.sms:
        assert min(sm.busy, sm.waiting, sm.idle) >= 0
        assert abs(sm.busy + sm.waiting + sm.idle - 1) < 1e-9
