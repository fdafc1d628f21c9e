"""Model families: one table per family drives config defaults, checkpoint names and shapes."""
import pytest
import torch

from eventkernel.models.config import Limits, ModelConfig, parse_config
from eventkernel.models.decoder import build_graph, graph_weight_parts, random_checkpoint
from eventkernel.models.errors import UnsupportedArchitectureError
from eventkernel.models.families import FAMILIES
from eventkernel.models.presets import preset_config

MINIMAL = {"hidden_size": 256, "num_hidden_layers": 2, "num_attention_heads": 8,
           "intermediate_size": 512, "vocab_size": 1000}


def test_registry():
    assert set(FAMILIES) == {"llama", "qwen3", "qwen3_moe"}
    assert not FAMILIES["llama"].qk_norm and FAMILIES["qwen3"].qk_norm
    assert FAMILIES["qwen3_moe"].qk_norm and FAMILIES["qwen3_moe"].moe
    assert not FAMILIES["qwen3"].moe
    assert FAMILIES["llama"].architectures == ("LlamaForCausalLM",)
    assert FAMILIES["qwen3"].architectures == ("Qwen3ForCausalLM",)
    assert FAMILIES["qwen3_moe"].architectures == ("Qwen3MoeForCausalLM",)


@pytest.mark.parametrize("model_type", ["llama", "qwen3", "qwen3_moe"])
def test_defaults_are_those_of_transformers(model_type):
    """A config.json that leaves keys out means what transformers' config class defaults to."""
    import transformers

    if model_type == "qwen3":      # Qwen3's default of 32 KV heads needs 32 query heads
        raw = {**MINIMAL, "num_attention_heads": 32}
    else:
        raw = dict(MINIMAL)
    ours = parse_config({"model_type": model_type, **raw})
    theirs = transformers.AutoConfig.for_model(model_type, **raw)
    assert ours.num_kv_heads == theirs.num_key_value_heads
    assert ours.head_dim == (getattr(theirs, "head_dim", None)
                             or theirs.hidden_size // theirs.num_attention_heads)
    assert ours.rms_norm_eps == theirs.rms_norm_eps
    assert ours.rope_theta == theirs.rope_parameters["rope_theta"]
    assert ours.max_position_embeddings == theirs.max_position_embeddings
    assert ours.tie_word_embeddings == theirs.tie_word_embeddings
    assert (ours.bos_token_id, ours.eos_token_id) == (theirs.bos_token_id, theirs.eos_token_id)
    if model_type == "qwen3_moe":
        assert (ours.num_experts, ours.experts_per_token, ours.moe_intermediate_size,
                ours.norm_topk_prob, ours.decoder_sparse_step, list(ours.mlp_only_layers)) == (
            theirs.num_experts, theirs.num_experts_per_tok, theirs.moe_intermediate_size,
            theirs.norm_topk_prob, theirs.decoder_sparse_step, theirs.mlp_only_layers)


def test_moe_layers_follow_transformers_rule():
    """decoder_sparse_step and mlp_only_layers pick the MoE layers as transformers does."""
    import transformers

    raw = {**MINIMAL, "num_hidden_layers": 6, "decoder_sparse_step": 2, "mlp_only_layers": [3],
           "num_experts": 8, "num_experts_per_tok": 2, "moe_intermediate_size": 64}
    ours = parse_config({"model_type": "qwen3_moe", **raw})
    hf = transformers.AutoConfig.for_model("qwen3_moe", **raw)
    expected = [i not in hf.mlp_only_layers and (i + 1) % hf.decoder_sparse_step == 0
                for i in range(6)]
    assert [ours.is_moe_layer(i) for i in range(6)] == expected == [
        False, True, False, False, False, True]
    # transformers >= 5 writes num_local_experts for num_experts
    renamed = {k: v for k, v in raw.items() if k != "num_experts"} | {"num_local_experts": 8}
    assert parse_config({"model_type": "qwen3_moe", **renamed}).num_experts == 8


@pytest.mark.parametrize("preset", ["tiny-llama", "tiny-qwen3", "smollm2-135m", "tiny-qwen3-moe"])
def test_table_shapes_match_the_graph(preset):
    config = ModelConfig.from_hf(preset_config(preset))
    graph = build_graph(config, Limits(max_tokens=4, max_seqs=2, max_context=64))
    shapes = config.checkpoint_shapes()
    parts = graph_weight_parts(config)
    for name, hf_names in parts.items():
        rows = sum(shapes[n][0] for n in hf_names)
        expected = tuple(graph.tensors[name].shape)
        if len(expected) == 3:          # a stack of experts: each expert's parts in turn
            expected = (expected[0] * expected[1], expected[2])
        assert (rows, *shapes[hf_names[0]][1:]) == expected, name
    graph_weights = {n for n, t in graph.tensors.items() if t.kind.name == "WEIGHT"}
    assert graph_weights - set(parts) == {"rope_inv_freq"}
    qk_norm = any(".q_norm" in n for n in parts)
    assert qk_norm == config.qk_norm == (config.arch in ("qwen3", "qwen3_moe"))
    assert sum(t.numel() for t in random_checkpoint(config).values()) == config.num_parameters()


def test_random_checkpoint_dtype():
    config = ModelConfig.from_hf(preset_config("tiny-qwen3"))
    weights = random_checkpoint(config, dtype=torch.bfloat16)
    assert {w.dtype for w in weights.values()} == {torch.bfloat16}
    assert set(weights) == set(config.checkpoint_shapes())


@pytest.mark.parametrize("raw, named", [
    ({"model_type": "mixtral", "architectures": ["MixtralForCausalLM"]}, "MixtralForCausalLM"),
    ({"architectures": ["MistralForCausalLM"]}, "MistralForCausalLM"),
    ({"model_type": "gpt2"}, "gpt2"),
])
def test_unsupported_architecture_lists_the_supported(raw, named):
    with pytest.raises(UnsupportedArchitectureError, match=named) as info:
        parse_config({**MINIMAL, **raw})
    assert "LlamaForCausalLM (llama)" in str(info.value)
    assert "Qwen3ForCausalLM (qwen3)" in str(info.value)
    assert "Qwen3MoeForCausalLM (qwen3_moe)" in str(info.value)


def test_architectures_alone_pick_the_family():
    config = parse_config({**MINIMAL, "architectures": ["Qwen3ForCausalLM"],
                           "num_key_value_heads": 2, "head_dim": 32})
    assert config.arch == "qwen3" and config.qk_norm


def test_eos_list_round_trips():
    config = parse_config({**MINIMAL, "model_type": "llama", "eos_token_id": [2, 7]})
    assert config.eos_token_id == (2, 7)
    assert ModelConfig.from_hf(config.to_hf()) == config
