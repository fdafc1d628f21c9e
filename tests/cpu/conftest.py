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


def gguf_writer(path, arch: str, config):
    """A ``gguf.GGUFWriter`` for ``path`` with the decoder metadata of the transformers
    ``config`` (what llama.cpp's converter writes for these keys)."""
    import gguf

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_key_length(config.head_dim)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_vocab_size(config.vocab_size)
    return writer
