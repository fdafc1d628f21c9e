"""Llama-3.x (and SmolLM2): the dense decoder without q/k norm.

Defaults are those of transformers' ``LlamaConfig`` for keys a config.json leaves out
(``num_key_value_heads``: the head count, ``head_dim``: hidden_size / heads). llama.cpp's
converter reorders the rows of the q and k projections for its RoPE kernel; loading a GGUF
undoes it.
"""
from __future__ import annotations

from eventkernel.models.family import Family, dense_decoder_tensors

TENSORS = dense_decoder_tensors(gguf_interleaves_qk=True, qk_norm=False)

FAMILY = Family(
    model_type="llama",
    architectures=("LlamaForCausalLM",),
    gguf_architecture="llama",
    defaults={"num_key_value_heads": None, "head_dim": None, "rms_norm_eps": 1e-6,
              "rope_theta": 10000.0, "max_position_embeddings": 2048,
              "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2},
    qk_norm=False,
    tensors=TENSORS,
)
