"""Built-in shape presets (configs only, no weights), in Hugging Face config form."""
from __future__ import annotations

from typing import Any

_LLAMA3_SCALING = {"rope_type": "llama3", "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                   "original_max_position_embeddings": 8192}

PRESETS: dict[str, dict[str, Any]] = {
    "llama-3.2-1b": {
        "model_type": "llama", "hidden_size": 2048, "num_hidden_layers": 16,
        "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64,
        "intermediate_size": 8192, "vocab_size": 128256, "rms_norm_eps": 1e-5,
        "rope_theta": 500000.0, "rope_scaling": {**_LLAMA3_SCALING, "factor": 32.0},
        "tie_word_embeddings": True, "max_position_embeddings": 131072,
    },
    "llama-3.1-8b": {
        "model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 32,
        "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
        "intermediate_size": 14336, "vocab_size": 128256, "rms_norm_eps": 1e-5,
        "rope_theta": 500000.0, "rope_scaling": {**_LLAMA3_SCALING, "factor": 8.0},
        "tie_word_embeddings": False, "max_position_embeddings": 131072,
    },
    "qwen3-8b": {
        "model_type": "qwen3", "hidden_size": 4096, "num_hidden_layers": 36,
        "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
        "intermediate_size": 12288, "vocab_size": 151936, "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0, "tie_word_embeddings": False,
        "max_position_embeddings": 40960,
    },
}


def preset_config(name: str) -> dict[str, Any]:
    """The Hugging Face config dict of a built-in preset."""
    if name not in PRESETS:
        raise KeyError(f"unknown model preset {name!r}; known presets: {', '.join(PRESETS)}")
    return dict(PRESETS[name])


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
        cfg["rope_scaling"] = {**_LLAMA3_SCALING, "factor": 8.0,
                               "original_max_position_embeddings": 256}
    cfg.update(overrides)
    return cfg
