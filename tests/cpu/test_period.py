"""Repeated layers: the events copied from an earlier layer equal the derived ones."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from eventkernel.compiler import lower_model
from eventkernel.events import bind_events, derive_events
from eventkernel.events.period import Period, find_period
from eventkernel.events.verify import verify
from eventkernel.ir.graph import DType
from eventkernel.lower import Target
from eventkernel.models.config import Limits, ModelConfig
from eventkernel.models.presets import preset_config, tiny_config


def program(config: dict, max_tokens: int, max_context: int, workers: int):
    limits = Limits(max_tokens=max_tokens, max_seqs=max_tokens, max_context=max_context,
                    dtype=DType.BF16)
    return lower_model(ModelConfig.from_hf(config), limits, Target(num_workers=workers))[1]


def assert_same_events(a, b):
    assert len(a.events) == len(b.events)
    for x, y in zip(a.events, b.events):
        assert (x.name, x.producer, x.consumer, x.shape, x.dims, x.wait_count) == \
            (y.name, y.producer, y.consumer, y.shape, y.dims, y.wait_count)
        assert x.wait_map.spec == y.wait_map.spec and x.notify_map.spec == y.notify_map.spec
        for p, q in ((x.wait_map.table, y.wait_map.table),
                     (x.notify_map.table, y.notify_map.table), (x.producers, y.producers)):
            np.testing.assert_array_equal(p.offsets, q.offsets)
            np.testing.assert_array_equal(p.values, q.values)


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_copied_layers_equal_derived_ones(arch):
    prog = program(tiny_config(arch, num_hidden_layers=6), 16, 256, 8)
    # embedding, then 8 grids per layer: qkv, rope, attention partial + merge, o, gate_up,
    # silu_mul, down; the tail (gather, lm_head, argmax) is derived after the copies.
    assert find_period(prog) == Period(start=1, length=8, count=6)
    periodic, full = derive_events(prog), derive_events(prog, periodic=False)
    assert_same_events(periodic, full)
    for binding in ({"T": 1, "S": 1}, {"T": 11, "S": 3}, {"T": 16, "S": 16}):
        report = verify(bind_events(periodic, binding))
        assert report.ok, str(report)


def test_copied_layers_of_a_real_shape():
    """llama-3.2-1b's attention at 1K context: 16 sequences x 8 KV heads x splits."""
    config = {**preset_config("llama-3.2-1b"), "num_hidden_layers": 5}
    prog = program(config, 16, 1024, 132)
    assert_same_events(derive_events(prog), derive_events(prog, periodic=False))


def test_a_layer_that_differs_breaks_the_period():
    prog = program(tiny_config("llama", num_hidden_layers=6), 4, 128, 8)
    at = 1 + 8 * 4 + 4                                       # layer 4's o_proj
    assert prog.grids[at].name.endswith("o_proj")
    grids = list(prog.grids)
    tile = grids[at].tile
    grids[at] = dataclasses.replace(grids[at], tile={**tile, "TN": 2 * tile["TN"]})
    assert find_period(dataclasses.replace(prog, grids=tuple(grids))) == Period(1, 8, 4)
    assert find_period(program(tiny_config("llama", num_hidden_layers=3), 4, 128, 8)) is None
