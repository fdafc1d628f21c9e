"""The compiler's output is unchanged by refactors: tasks, regions, events, wait counts and
static queues of the presets hash to the values recorded before the re-housing (commit
4c3fec3, ``tests/cpu/data/fingerprints.json``). A change that means to alter the output
records new values with ``eventkernel inspect MODEL --fingerprint`` and says why."""
from __future__ import annotations

import json
import pathlib

import pytest

from eventkernel.models.config import Limits
from eventkernel.serve.inspect import fingerprint_model

RECORDED = json.loads((pathlib.Path(__file__).parent / "data" / "fingerprints.json").read_text())


@pytest.mark.parametrize("model", list(RECORDED["models"]))
def test_fingerprint_unchanged(model: str) -> None:
    limits = Limits(**RECORDED["limits"])
    fp = fingerprint_model(model, limits, RECORDED["workers"])
    want = RECORDED["models"][model]
    assert fp.tasks == want["tasks"], "task grids, tiles or accesses changed"
    assert fp.events == want["events"], "derived event tensors changed"
    assert fp.buckets == want["buckets"], "regions, bound tables or static queues changed"
    assert fp.total == want["total"]


def test_fingerprint_sees_a_change() -> None:
    """A different schedule width changes the queues' hash (the hash is not blind)."""
    limits = Limits(**RECORDED["limits"])
    a = fingerprint_model("tiny-llama", limits, RECORDED["workers"])
    b = fingerprint_model("tiny-llama", limits, RECORDED["workers"] - 1)
    assert a.tasks != b.tasks or a.buckets != b.buckets
