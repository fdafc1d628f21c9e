"""Shared tiny models: one compiled program per (family, dtype), and its HF twin."""
from __future__ import annotations

import functools

import pytest
import torch

from eventkernel.compiler import compile_model
from eventkernel.ir.graph import DType
from eventkernel.lower import Target
from eventkernel.models.config import Limits, ModelConfig
from eventkernel.models.decoder import graph_weights, random_checkpoint
from eventkernel.models.presets import tiny_config
from eventkernel.models.reference import transformers_model

TINY_LIMITS = dict(max_tokens=64, max_seqs=8, max_context=128, page_size=16)


@functools.lru_cache(maxsize=None)
def tiny(arch: str, dtype: str = "f32"):
    """(compiled program, graph weights, HF model) for a tiny config of ``arch``."""
    config = ModelConfig.from_hf(tiny_config(arch))
    dt = DType.F32 if dtype == "f32" else DType.BF16
    compiled = compile_model(config, Limits(**TINY_LIMITS, dtype=dt), Target(num_workers=8))
    checkpoint = random_checkpoint(config, seed=0)
    hf = transformers_model(config, checkpoint,
                            torch.float32 if dt is DType.F32 else torch.bfloat16)
    return compiled, graph_weights(compiled.graph, checkpoint), hf


@pytest.fixture(params=["llama", "qwen3"])
def arch(request):
    return request.param
