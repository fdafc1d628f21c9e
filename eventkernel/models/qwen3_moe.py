"""Qwen3-MoE: the Qwen3 decoder (q/k norms) whose MLPs are sparse MoE blocks: a router
picks ``num_experts_per_tok`` of ``num_experts`` experts per token, softmax in fp32, the
top-k weights renormalised when ``norm_topk_prob``. Layers listed in ``mlp_only_layers``,
or off the ``decoder_sparse_step``, keep a dense MLP of ``intermediate_size``.

Defaults are those of transformers' ``Qwen3MoeConfig`` (``head_dim`` hidden_size / heads,
4 KV heads). Checkpoints store each expert's projections separately
(``mlp.experts.{j}.gate_proj.weight``); GGUF files stack them (``ffn_gate_exps``), and
llama.cpp always renormalises the top-k weights.
"""
from __future__ import annotations

from eventkernel.models.family import Family, dense_decoder_tensors, moe_block_tensors

TENSORS = dense_decoder_tensors(gguf_interleaves_qk=False, qk_norm=True, mlp_layers="dense") \
    + moe_block_tensors()

FAMILY = Family(
    model_type="qwen3_moe",
    architectures=("Qwen3MoeForCausalLM",),
    gguf_architecture="qwen3moe",
    defaults={"num_key_value_heads": 4, "head_dim": None, "rms_norm_eps": 1e-6,
              "rope_theta": 10000.0, "max_position_embeddings": 32768,
              "tie_word_embeddings": False, "bos_token_id": None, "eos_token_id": None,
              "intermediate_size": 6144, "num_experts": 128, "num_experts_per_tok": 8,
              "moe_intermediate_size": 768, "norm_topk_prob": False,
              "decoder_sparse_step": 1, "mlp_only_layers": ()},
    qk_norm=True,
    tensors=TENSORS,
    moe=True,
    gguf_config_keys={"expert_count": "num_experts", "expert_used_count": "num_experts_per_tok",
                      "expert_feed_forward_length": "moe_intermediate_size"},
    gguf_fixed={"norm_topk_prob": True},
)
