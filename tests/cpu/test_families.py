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
    assert set(FAMILIES) == {"llama", "qwen3"}
    assert not FAMILIES["llama"].qk_norm and FAMILIES["qwen3"].qk_norm
    assert FAMILIES["llama"].architectures == ("LlamaForCausalLM",)
    assert FAMILIES["qwen3"].architectures == ("Qwen3ForCausalLM",)


@pytest.mark.parametrize("model_type", ["llama", "qwen3"])
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


@pytest.mark.parametrize("preset", ["tiny-llama", "tiny-qwen3", "smollm2-135m"])
def test_table_shapes_match_the_graph(preset):
    config = ModelConfig.from_hf(preset_config(preset))
    graph = build_graph(config, Limits(max_tokens=4, max_seqs=2, max_context=64))
    shapes = config.checkpoint_shapes()
    parts = graph_weight_parts(config)
    for name, hf_names in parts.items():
        rows = sum(shapes[n][0] for n in hf_names)
        assert (rows, *shapes[hf_names[0]][1:]) == tuple(graph.tensors[name].shape), name
    graph_weights = {n for n, t in graph.tensors.items() if t.kind.name == "WEIGHT"}
    assert graph_weights - set(parts) == {"rope_inv_freq"}
    qk_norm = any(".q_norm" in n for n in parts)
    assert qk_norm == config.qk_norm == (config.arch == "qwen3")
    assert sum(t.numel() for t in random_checkpoint(config).values()) == config.num_parameters()


def test_random_checkpoint_dtype():
    config = ModelConfig.from_hf(preset_config("tiny-qwen3"))
    weights = random_checkpoint(config, dtype=torch.bfloat16)
    assert {w.dtype for w in weights.values()} == {torch.bfloat16}
    assert set(weights) == set(config.checkpoint_shapes())


@pytest.mark.parametrize("raw, named", [
    ({"model_type": "qwen3_moe", "architectures": ["Qwen3MoeForCausalLM"]}, "Qwen3MoeForCausalLM"),
    ({"architectures": ["MistralForCausalLM"]}, "MistralForCausalLM"),
    ({"model_type": "gpt2"}, "gpt2"),
])
def test_unsupported_architecture_lists_the_supported(raw, named):
    with pytest.raises(UnsupportedArchitectureError, match=named) as info:
        parse_config({**MINIMAL, **raw})
    assert "LlamaForCausalLM (llama)" in str(info.value)
    assert "Qwen3ForCausalLM (qwen3)" in str(info.value)


def test_architectures_alone_pick_the_family():
    config = parse_config({**MINIMAL, "architectures": ["Qwen3ForCausalLM"],
                           "num_key_value_heads": 2, "head_dim": 32})
    assert config.arch == "qwen3" and config.qk_norm


def test_eos_list_round_trips():
    config = parse_config({**MINIMAL, "model_type": "llama", "eos_token_id": [2, 7]})
    assert config.eos_token_id == (2, 7)
    assert ModelConfig.from_hf(config.to_hf()) == config
