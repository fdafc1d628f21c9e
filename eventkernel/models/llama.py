"""Llama-3.x (and SmolLM2): the dense decoder without q/k norm.

Defaults are those of transformers' ``LlamaConfig`` for keys a config.json leaves out
(``num_key_value_heads``: the head count, ``head_dim``: hidden_size / heads). llama.cpp's
converter reorders the rows of the q and k projections for its RoPE kernel; loading a GGUF
undoes it.
"""
from __future__ import annotations

from eventkernel.models.family import CheckpointTensor as T
from eventkernel.models.family import Family

LAYER = "model.layers.{i}."

TENSORS = (
    # graph weight        Hugging Face name                          GGUF name
    T("embed", "model.embed_tokens.weight", "token_embd.weight", ("vocab_size", "hidden_size")),
    T("final_norm", "model.norm.weight", "output_norm.weight", ("hidden_size",)),
    T("lm_head", "lm_head.weight", "output.weight", ("vocab_size", "hidden_size"),
      untied_only=True),
    T("layers.{i}.attn_norm", LAYER + "input_layernorm.weight", "blk.{i}.attn_norm.weight",
      ("hidden_size",)),
    T("layers.{i}.qkv", LAYER + "self_attn.q_proj.weight", "blk.{i}.attn_q.weight",
      ("q_size", "hidden_size"), gguf_row_heads="num_heads"),
    T("layers.{i}.qkv", LAYER + "self_attn.k_proj.weight", "blk.{i}.attn_k.weight",
      ("kv_size", "hidden_size"), gguf_row_heads="num_kv_heads"),
    T("layers.{i}.qkv", LAYER + "self_attn.v_proj.weight", "blk.{i}.attn_v.weight",
      ("kv_size", "hidden_size")),
    T("layers.{i}.o_proj", LAYER + "self_attn.o_proj.weight", "blk.{i}.attn_output.weight",
      ("hidden_size", "q_size")),
    T("layers.{i}.mlp_norm", LAYER + "post_attention_layernorm.weight",
      "blk.{i}.ffn_norm.weight", ("hidden_size",)),
    T("layers.{i}.gate_up", LAYER + "mlp.gate_proj.weight", "blk.{i}.ffn_gate.weight",
      ("intermediate_size", "hidden_size")),
    T("layers.{i}.gate_up", LAYER + "mlp.up_proj.weight", "blk.{i}.ffn_up.weight",
      ("intermediate_size", "hidden_size")),
    T("layers.{i}.down", LAYER + "mlp.down_proj.weight", "blk.{i}.ffn_down.weight",
      ("hidden_size", "intermediate_size")),
)

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
