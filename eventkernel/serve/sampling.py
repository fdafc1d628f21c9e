"""Sampling lives in the engine (it is part of a step's postprocess); re-exported here for the
API's users: ``from eventkernel.serve.sampling import SamplingParams``."""
from __future__ import annotations

from eventkernel.engine.sampling import (  # noqa: F401
    Sampler,
    SamplingParams,
    find_stop,
    make_generator,
    partial_stop_length,
)

__all__ = ["Sampler", "SamplingParams", "find_stop", "make_generator", "partial_stop_length"]
