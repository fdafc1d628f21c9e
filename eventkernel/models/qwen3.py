"""Qwen3 dense: the Llama decoder plus an RMSNorm on each head's q and k before RoPE.

Defaults are those of transformers' ``Qwen3Config`` for keys a config.json leaves out (note
``head_dim`` 128 and ``num_key_value_heads`` 32, not derived from the other shapes). GGUF
files of Qwen3 keep the Hugging Face row order of q and k.
"""
from __future__ import annotations

from eventkernel.models.family import Family, dense_decoder_tensors

TENSORS = dense_decoder_tensors(gguf_interleaves_qk=False, qk_norm=True)

FAMILY = Family(
    model_type="qwen3",
    architectures=("Qwen3ForCausalLM",),
    gguf_architecture="qwen3",
    defaults={"num_key_value_heads": 32, "head_dim": 128, "rms_norm_eps": 1e-6,
              "rope_theta": 10000.0, "max_position_embeddings": 32768,
              "tie_word_embeddings": False, "bos_token_id": None, "eos_token_id": None},
    qk_norm=True,
    tensors=TENSORS,
)
