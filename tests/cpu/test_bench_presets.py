"""Shape presets, ModelShape parsing, and decode byte counts against published sizes."""

import pytest
import torch

from eventkernel.models.presets import preset_config, preset_names
from eventkernel.models.config import ModelConfig as ModelShape
from eventkernel.bench.timing import decode_bytes, decode_bytes_breakdown

REAL = ("llama-3.2-1b", "llama-3.1-8b", "qwen3-8b")
# Parameter counts of the published checkpoints.
PARAMS = {"llama-3.2-1b": 1_235_814_400, "llama-3.1-8b": 8_030_261_248,
          "qwen3-8b": 8_190_735_360}


def test_names_and_error():
    assert set(REAL) <= set(preset_names())
    with pytest.raises(KeyError, match="known presets: llama-3.2-1b"):
        preset_config("llama-4")


def test_copies_are_independent():
    config = preset_config("llama-3.2-1b")
    config["hidden_size"] = 1
    assert preset_config("llama-3.2-1b")["hidden_size"] == 2048


@pytest.mark.parametrize("name", REAL)
def test_parameter_count(name):
    shape = ModelShape.from_hf(preset_config(name))
    lm_head = 0 if shape.tie_word_embeddings else shape.vocab_size * shape.hidden_size
    total = (shape.num_layers * shape.layer_param_count() + shape.vocab_size * shape.hidden_size
             + lm_head + shape.hidden_size)
    assert total == PARAMS[name]


def test_shapes_from_references():
    s = ModelShape.from_hf(preset_config("qwen3-8b"))
    assert (s.hidden_size, s.num_layers, s.num_heads, s.num_kv_heads, s.head_dim) == (
        4096, 36, 32, 8, 128)
    assert s.qk_norm and not s.tie_word_embeddings and s.rope_scaling is None
    assert s.rms_norm_eps == 1e-6 and s.rope_theta == 1e6
    s = ModelShape.from_hf(preset_config("llama-3.2-1b"))
    assert s.tie_word_embeddings and dict(s.rope_scaling)["factor"] == 32 and s.rms_norm_eps == 1e-5
    assert ModelShape.from_hf(preset_config("llama-3.1-8b")).rope_scaling[1][1] == 8


@pytest.mark.parametrize("name", REAL)
def test_transformers_reads_presets(name):
    from transformers import AutoConfig

    config = preset_config(name)
    fields = {k: v for k, v in config.items() if k not in ("model_type", "torch_dtype")}
    hf = AutoConfig.for_model(config["model_type"], **fields)
    assert ModelShape.from_hf(hf) == ModelShape.from_hf(config)


@pytest.mark.parametrize("name", [*REAL, "tiny-llama"])
def test_rope_matches_transformers(name):
    from transformers import AutoConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    from eventkernel.bench.baseline import rope_inv_freq

    config = preset_config(name)
    fields = {k: v for k, v in config.items() if k not in ("model_type", "torch_dtype")}
    # Qwen3 RoPE is the default RoPE; LlamaRotaryEmbedding computes both from the config.
    hf = AutoConfig.for_model("llama", **fields)
    expected = LlamaRotaryEmbedding(hf).inv_freq
    torch.testing.assert_close(rope_inv_freq(ModelShape.from_hf(config)), expected)


def test_decode_bytes_matches_references():
    # REFERENCES.md: 2.47 GB, 15.0 GB, 15.1 GB read per batch-1 step (weights dominate).
    for name, gigabytes in (("llama-3.2-1b", 2.47), ("llama-3.1-8b", 15.0), ("qwen3-8b", 15.1)):
        assert decode_bytes(preset_config(name), 1, 0) / 1e9 == pytest.approx(gigabytes, abs=0.06)


def test_decode_bytes_counts_kv_and_embedding_rows():
    config = preset_config("llama-3.1-8b")
    parts = decode_bytes_breakdown(config, 16, 4096)
    assert parts["kv_cache"] == 16 * 4096 * 32 * 2 * 8 * 128 * 2
    assert parts["embedding_rows"] == 16 * 4096 * 2
    assert parts["lm_head"] == 128256 * 4096 * 2
    assert decode_bytes(config, 16, 4096) == sum(parts.values())
    assert decode_bytes(config, 1, 512, dtype_bytes=1) < decode_bytes(config, 1, 512)


def test_unsupported_model_is_refused():
    with pytest.raises(ValueError, match="unsupported architecture"):
        ModelShape.from_hf({**preset_config("qwen3-8b"), "model_type": "mixtral"})
