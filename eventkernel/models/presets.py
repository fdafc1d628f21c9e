"""Built-in model shape presets in Hugging Face ``config.json`` form (no weights).

Benchmarks need the shapes of real models without downloading their weights. Each preset is
the model's ``config.json`` as published (values checked against the model cards; see
``/work/shared/REFERENCES.md``), so it can be handed to ``transformers.AutoConfig`` or to our
own model builders unchanged. The ``tiny-*`` presets keep every structural feature of their
family (GQA, llama3 RoPE scaling, tied embeddings, q/k norm) at a size that runs on a CPU in
tests.
"""

from __future__ import annotations

import copy
from typing import Any

_LLAMA3_COMMON = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 128000,
    "eos_token_id": 128001,
    "hidden_act": "silu",
    "initializer_range": 0.02,
    "max_position_embeddings": 131072,
    "mlp_bias": False,
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-5,
    "rope_theta": 500000.0,
    "torch_dtype": "bfloat16",
    "use_cache": True,
    "vocab_size": 128256,
}

_QWEN3_COMMON = {
    "architectures": ["Qwen3ForCausalLM"],
    "model_type": "qwen3",
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "hidden_act": "silu",
    "initializer_range": 0.02,
    "max_position_embeddings": 40960,
    "max_window_layers": 36,
    "rms_norm_eps": 1e-6,
    "rope_scaling": None,
    "rope_theta": 1000000.0,
    "sliding_window": None,
    "torch_dtype": "bfloat16",
    "use_cache": True,
    "use_sliding_window": False,
    "vocab_size": 151936,
}


_QWEN3_MOE_COMMON = {
    **_QWEN3_COMMON,
    "architectures": ["Qwen3MoeForCausalLM"],
    "model_type": "qwen3_moe",
    "decoder_sparse_step": 1,
    "mlp_only_layers": [],
    "norm_topk_prob": True,
    "num_experts": 128,
    "num_experts_per_tok": 8,
    "output_router_logits": False,
    "router_aux_loss_coef": 0.001,
    "head_dim": 128,
    "num_key_value_heads": 4,
}


def _llama3_rope_scaling(factor: float) -> dict:
    return {
        "rope_type": "llama3",
        "factor": factor,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }


_PRESETS: dict[str, dict] = {
    "llama-3.2-1b": {
        **_LLAMA3_COMMON,
        "hidden_size": 2048,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 64,
        "intermediate_size": 8192,
        "tie_word_embeddings": True,
        "rope_scaling": _llama3_rope_scaling(32.0),
    },
    "llama-3.1-8b": {
        **_LLAMA3_COMMON,
        "hidden_size": 4096,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "intermediate_size": 14336,
        "tie_word_embeddings": False,
        "rope_scaling": _llama3_rope_scaling(8.0),
    },
    "qwen3-8b": {
        **_QWEN3_COMMON,
        "hidden_size": 4096,
        "num_hidden_layers": 36,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "intermediate_size": 12288,
        "tie_word_embeddings": False,
    },
    "qwen3-30b-a3b": {
        **_QWEN3_MOE_COMMON,
        "hidden_size": 2048,
        "num_hidden_layers": 48,
        "num_attention_heads": 32,
        "intermediate_size": 6144,
        "moe_intermediate_size": 768,
        "max_window_layers": 48,
        "tie_word_embeddings": False,
    },
    "qwen3-235b-a22b": {
        **_QWEN3_MOE_COMMON,
        "hidden_size": 4096,
        "num_hidden_layers": 94,
        "num_attention_heads": 64,
        "intermediate_size": 12288,
        "moe_intermediate_size": 1536,
        "max_window_layers": 94,
        "tie_word_embeddings": False,
    },
    # The built-in default model's architecture (SmolLM2-135M-Instruct): K = 576 and three
    # query heads per KV head exercise shapes the larger presets do not.
    "smollm2-135m": {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "rms_norm_eps": 1e-5,
        "rope_theta": 100000.0,
        "max_position_embeddings": 8192,
        "vocab_size": 49152,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_size": 576,
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "head_dim": 64,
        "intermediate_size": 1536,
        "tie_word_embeddings": True,
        "torch_dtype": "bfloat16",
    },
    # NOTE: tiny presets keep original_max_position_embeddings below max_position_embeddings
    # (transformers rejects the llama3 scaling otherwise) and a head_dim that is not
    # hidden_size / num_attention_heads, so a wrong fallback shows up in tests.
    "tiny-llama": {
        **_LLAMA3_COMMON,
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 32,
        "intermediate_size": 128,
        "vocab_size": 256,
        "max_position_embeddings": 1024,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "tie_word_embeddings": True,
        "rope_scaling": {**_llama3_rope_scaling(8.0), "original_max_position_embeddings": 64},
    },
    "tiny-qwen3": {
        **_QWEN3_COMMON,
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 32,
        "intermediate_size": 128,
        "vocab_size": 256,
        "max_position_embeddings": 1024,
        "max_window_layers": 2,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "tie_word_embeddings": False,
    },
    # 16 experts, top-4, one dense layer (mlp_only_layers) between two MoE layers.
    "tiny-qwen3-moe": {
        **_QWEN3_MOE_COMMON,
        "hidden_size": 64,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 32,
        "intermediate_size": 128,
        "moe_intermediate_size": 32,
        "num_experts": 16,
        "num_experts_per_tok": 4,
        "mlp_only_layers": [1],
        "vocab_size": 256,
        "max_position_embeddings": 1024,
        "max_window_layers": 3,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "tie_word_embeddings": False,
    },
}


def preset_names() -> list[str]:
    """Return the names of all known presets, real models first."""
    return list(_PRESETS)


def preset_config(name: str) -> dict:
    """Return a fresh copy of the Hugging Face config dict for preset ``name``.

    Raises ``KeyError`` naming every known preset when ``name`` is unknown.
    """
    key = name.strip().lower()
    if key not in _PRESETS:
        known = ", ".join(_PRESETS)
        raise KeyError(f"unknown model preset {name!r}; known presets: {known}")
    return copy.deepcopy(_PRESETS[key])


# The presets a user may name (inspect, compile, bench): every one, real models first.
PRESETS = _PRESETS

def tiny_config(arch: str = "llama", **overrides: Any) -> dict[str, Any]:
    """A small config of either family for tests (2 layers, hidden 256, GQA)."""
    cfg = {
        "model_type": arch, "hidden_size": 256, "num_hidden_layers": 2,
        "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 32,
        "intermediate_size": 512, "vocab_size": 512, "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0, "tie_word_embeddings": arch == "llama",
        "max_position_embeddings": 2048,
    }
    if arch == "llama":
        cfg["rope_scaling"] = {**_llama3_rope_scaling(8.0),
                               "original_max_position_embeddings": 256}
    cfg.update(overrides)
    return cfg
