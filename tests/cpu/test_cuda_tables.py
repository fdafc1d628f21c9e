"""The tables the CUDA backend uploads per shape bucket, decoded on the CPU: every queue
entry's descriptor, event counts and first wait/notify agree with the bound events, and a
worker waits on each counter once without losing a dependency."""
import numpy as np
import pytest

from eventkernel.compiler import compile_model
from eventkernel.cuda.backend import _Bucket
from eventkernel.cuda.codegen import generate
from eventkernel.cuda.wire import ENTRY_EVENTS, TASK_DESC
from eventkernel.ir.graph import DType
from eventkernel.lower import Target
from eventkernel.models.config import Limits, ModelConfig
from eventkernel.models.presets import tiny_config


@pytest.mark.parametrize("arch,tokens,seqs", [("llama", 1, 1), ("qwen3", 20, 3)])
def test_bucket_tables_encode_the_schedule(arch, tokens, seqs):
    config = ModelConfig.from_hf(tiny_config(arch))
    limits = Limits(max_tokens=64, max_seqs=8, max_context=256, dtype=DType.BF16)
    compiled = compile_model(config, limits, Target(num_workers=16))
    schedule = compiled.static(compiled.bucket(tokens, seqs), 16)
    bucket = _Bucket(schedule, generate(compiled.program).grid_kind, "cpu")
    t = {name: tensor.numpy() for name, tensor in bucket.tensors.items()}
    desc = t["queue"].view(TASK_DESC.dtype)
    events = t["events"].view(ENTRY_EVENTS.dtype)
    entries = [(g, task) for q in schedule.queues for g, task in q]
    assert len(desc) == len(events) == len(entries) + 1          # and a pad entry
    bound = schedule.bound
    e = 0
    for queue in schedule.queues:
        waited: set[int] = set()
        for g, task in queue:
            w0, w1 = t["wait_begin"][e], t["wait_begin"][e + 1]
            n0, n1 = t["notify_begin"][e], t["notify_begin"][e + 1]
            waits = t["wait_counter"][w0:w1].tolist()
            assert desc[e]["num_waits"] == w1 - w0 and desc[e]["num_notifies"] == n1 - n0
            assert not waited & set(waits), "a worker waited twice on one counter"
            waited |= set(waits)
            assert set(bound.waits[g].row(task).tolist()) <= waited, "a dependency was lost"
            assert (t["wait_target"][w0:w1] == bound.targets[waits]).all()
            if waits:
                assert (events[e]["counter0"], events[e]["target0"]) == \
                    (waits[0], bound.targets[waits[0]])
            notifies = t["notify_counter"][n0:n1].tolist()
            assert notifies == bound.notifies[g].row(task).tolist()
            if notifies:
                assert events[e]["notify0"] == notifies[0]
            e += 1
    # The tables hold one element past the last entry's range: the look-ahead reads it.
    assert len(t["wait_counter"]) == t["wait_begin"][-1] + 1
    assert len(t["notify_counter"]) == t["notify_begin"][-1] + 1
    assert np.count_nonzero(desc["num_waits"]) < len(entries)    # repeated waits were dropped
