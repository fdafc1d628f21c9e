"""The engine owns the step: request ids, admission within max_seqs, postprocess (EOS,
max_tokens, stop strings, finish reasons, KV release) and abort. A tiny preset on the CPU."""
from __future__ import annotations

import pytest

from eventkernel.build import BuildOptions, build
from eventkernel.engine.engine import Engine
from eventkernel.engine.sampling import SamplingParams
from eventkernel.serve.tokenizer import ByteTokenizer

GREEDY = SamplingParams(max_tokens=4, temperature=0)


@pytest.fixture(scope="module")
def backend():
    options = BuildOptions(backend="cpu", max_tokens_per_step=16, max_seqs=2, max_context=64)
    return build("tiny-llama", options).backend


@pytest.fixture
def engine(backend):
    return Engine(backend, ByteTokenizer(256, eos_token_id=2))


def _run(engine):
    outputs = {}
    while engine.has_unfinished():
        for out in engine.step():
            outputs.setdefault(out.request_id, []).append(out)
    return outputs


def test_requests_get_ids_and_finish_by_length(engine):
    ids = [engine.add_request([10, 11, 12], GREEDY) for _ in range(3)]
    assert ids == [0, 1, 2]
    assert len(engine.scheduler.waiting) == 3
    outputs = _run(engine)
    for request_id in ids:
        *middle, last = outputs[request_id]
        assert not any(o.finished for o in middle)
        assert last.finished and last.finish_reason == "length" and len(last.output_ids) == 4
        assert list(last.output_ids) == [o.token_id for o in outputs[request_id]]
    assert outputs[0][-1].output_ids == outputs[2][-1].output_ids    # same prompt, greedy
    assert not engine.blocks.tables and len(engine.blocks.free) == engine.limits.total_pages


def test_at_most_max_seqs_run_at_once(engine):
    for _ in range(3):
        # prefill in chunks of 16
        engine.add_request([5] * 20, SamplingParams(max_tokens=2, temperature=0))
    seen = 0
    while engine.has_unfinished():
        engine.step()
        assert len(engine.scheduler.running) <= engine.limits.max_seqs
        assert engine.last_step.num_tokens <= engine.limits.max_tokens
        seen = max(seen, len(engine.blocks.tables))
    assert seen == engine.limits.max_seqs


def test_eos_stops_unless_ignored(engine):
    first = _run_one(engine, [10, 11, 12], GREEDY)
    eos = first.output_ids[1]                          # make the 2nd greedy token the EOS
    engine.tokenizer = ByteTokenizer(256, eos_token_id=eos)
    stopped = _run_one(engine, [10, 11, 12], GREEDY)
    assert stopped.finish_reason == "stop" and stopped.token_id == eos
    assert list(stopped.output_ids) == list(first.output_ids[:first.output_ids.index(eos)])
    ignored = _run_one(engine, [10, 11, 12],
                       SamplingParams(max_tokens=4, temperature=0, ignore_eos=True))
    assert ignored.output_ids == first.output_ids and ignored.finish_reason == "length"


def test_stop_string_cuts_the_text(engine):
    first = _run_one(engine, [10, 11, 12], GREEDY)
    stop = engine.tokenizer.decode(first.output_ids[1:2])
    if not stop:
        pytest.skip("the 2nd token decodes to nothing")
    out = _run_one(engine, [10, 11, 12], SamplingParams(max_tokens=4, temperature=0,
                                                        stop=[stop]))
    assert out.finish_reason == "stop" and stop not in out.text


def test_abort_frees_the_pages(engine):
    keep = engine.add_request([1, 2, 3], SamplingParams(max_tokens=6, temperature=0))
    drop = engine.add_request([4, 5, 6], SamplingParams(max_tokens=6, temperature=0))
    engine.step()
    assert drop in engine.blocks.tables
    assert engine.abort(drop) and not engine.abort(drop)
    assert drop not in engine.blocks.tables
    outputs = _run(engine)
    assert drop not in outputs and outputs[keep][-1].finish_reason == "length"


def test_sampled_requests_are_reproducible_alone_or_batched(engine):
    params = SamplingParams(max_tokens=5, temperature=0.9, seed=7)
    alone = _run_one(engine, [9, 8, 7], params)
    a = engine.add_request([9, 8, 7], params)
    engine.add_request([1, 2], SamplingParams(max_tokens=3, temperature=1.0, seed=1))
    assert _run(engine)[a][-1].output_ids == alone.output_ids


def _run_one(engine, prompt, params):
    request_id = engine.add_request(prompt, params)
    return _run(engine)[request_id][-1]
