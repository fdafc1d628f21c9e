"""Qwen3 dense: the Llama decoder plus an RMSNorm on each head's q and k before RoPE.

Defaults are those of transformers' ``Qwen3Config`` for keys a config.json leaves out (note
``head_dim`` 128 and ``num_key_value_heads`` 32, not derived from the other shapes). GGUF
files of Qwen3 keep the Hugging Face row order of q and k.
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
      ("q_size", "hidden_size")),
    T("layers.{i}.qkv", LAYER + "self_attn.k_proj.weight", "blk.{i}.attn_k.weight",
      ("kv_size", "hidden_size")),
    T("layers.{i}.qkv", LAYER + "self_attn.v_proj.weight", "blk.{i}.attn_v.weight",
      ("kv_size", "hidden_size")),
    T("layers.{i}.q_norm", LAYER + "self_attn.q_norm.weight", "blk.{i}.attn_q_norm.weight",
      ("head_dim",)),
    T("layers.{i}.k_norm", LAYER + "self_attn.k_norm.weight", "blk.{i}.attn_k_norm.weight",
      ("head_dim",)),
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
    model_type="qwen3",
    architectures=("Qwen3ForCausalLM",),
    gguf_architecture="qwen3",
    defaults={"num_key_value_heads": 32, "head_dim": 128, "rms_norm_eps": 1e-6,
              "rope_theta": 10000.0, "max_position_embeddings": 32768,
              "tie_word_embeddings": False, "bos_token_id": None, "eos_token_id": None},
    qk_norm=True,
    tensors=TENSORS,
)
