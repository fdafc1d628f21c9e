"""Checkpoint loading: the default GGUF against transformers, tiny HF and GGUF round trips,
and the error for each malformed input."""

import importlib.util
import json
import pathlib

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from eventkernel.models.checkpoint import (
    CheckpointError,
    CheckpointNotFoundError,
    UnsupportedArchitectureError,
    load_checkpoint,
)
from eventkernel.models.config import ModelConfig
from eventkernel.models.default import default_model_path
from tests.cpu.conftest import gguf_writer

CONFIG_KEYS = (
    "model_type", "hidden_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "head_dim", "intermediate_size", "vocab_size", "rms_norm_eps",
    "tie_word_embeddings", "max_position_embeddings", "bos_token_id", "eos_token_id",
)


def _transformers_from_gguf(path: pathlib.Path):
    """(config, state_dict) transformers makes of a GGUF file, in float32."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if importlib.util.find_spec("accelerate") is not None:
        model = AutoModelForCausalLM.from_pretrained(
            path.parent, gguf_file=path.name, dtype=torch.float32
        )
        return model.config, model.state_dict()
    # NOTE: from_pretrained(gguf_file=...) insists on accelerate; without it, call the
    # function it uses to read, dequantize, un-permute and rename the GGUF tensors.
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    config = AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    parsed = load_gguf_checkpoint(path, return_tensors=True, model_to_load=model,
                                  torch_dtype=torch.float32)
    return config, parsed["tensors"]


@pytest.fixture(scope="module")
def gguf_path():
    return default_model_path()


@pytest.fixture(scope="module")
def ours(gguf_path):
    return load_checkpoint(gguf_path, use_cache=False)


@pytest.fixture(scope="module")
def reference(gguf_path):
    return _transformers_from_gguf(gguf_path)


def test_default_gguf_config(ours, gguf_path):
    assert ours.path == gguf_path and ours.tokenizer_source == gguf_path
    assert ours.config == {
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 576,
        "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
        "head_dim": 64, "intermediate_size": 1536, "vocab_size": 49152,
        "rms_norm_eps": pytest.approx(1e-5), "rope_theta": 100000.0,
        "tie_word_embeddings": True, "max_position_embeddings": 8192,
        "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu", "attention_bias": False,
    }
    assert ours.model_config == ModelConfig.from_hf(ours.config)


def test_default_gguf_config_matches_transformers(ours, reference):
    config, _ = reference
    for key in CONFIG_KEYS:
        assert ours.config[key] == getattr(config, key), key
    assert ours.config["rope_theta"] == config.rope_parameters["rope_theta"]
    assert config.rope_parameters["rope_type"] == "default"


def test_default_gguf_weights_equal_transformers(ours, reference):
    _, state_dict = reference
    assert "lm_head.weight" not in ours.weights
    assert set(ours.weights) == set(state_dict) - {"lm_head.weight"}
    assert len(ours.weights) == 2 + 30 * 9
    for name, weight in ours.weights.items():
        assert weight.dtype == torch.float32, name
        assert torch.equal(weight, state_dict[name]), name


def test_dtype_is_applied(tmp_path):
    _save_tiny(tmp_path, "llama")
    checkpoint = load_checkpoint(tmp_path, dtype=torch.bfloat16)
    assert {w.dtype for w in checkpoint.weights.values()} == {torch.bfloat16}


# --- tiny Hugging Face checkpoints -----------------------------------------------------------


def _save_tiny(directory: pathlib.Path, model_type: str, tied: bool = False,
               max_shard_size: str | None = None, **overrides):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM

    config_class, model_class = {
        "llama": (LlamaConfig, LlamaForCausalLM), "qwen3": (Qwen3Config, Qwen3ForCausalLM),
    }[model_type]
    config = config_class(
        hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=32, vocab_size=128, tie_word_embeddings=tied,
        max_position_embeddings=256, bos_token_id=1, eos_token_id=2, **overrides,
    )
    torch.manual_seed(0)
    model = model_class(config).eval()
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(directory, **kwargs)
    return model


@pytest.mark.parametrize("model_type", ["llama", "qwen3"])
@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("sharded", [False, True])
def test_hf_directory_round_trip(tmp_path, model_type, tied, sharded):
    model = _save_tiny(tmp_path, model_type, tied, "40KB" if sharded else None)
    assert (tmp_path / "model.safetensors.index.json").is_file() == sharded
    checkpoint = load_checkpoint(tmp_path)

    expected = model.state_dict()
    if tied:
        expected.pop("lm_head.weight")
    assert set(checkpoint.weights) == set(expected)
    for name, weight in checkpoint.weights.items():
        assert torch.equal(weight, expected[name]), name
    for key in CONFIG_KEYS:
        assert checkpoint.config[key] == getattr(model.config, key), key
    assert checkpoint.config["rope_theta"] == model.config.rope_parameters["rope_theta"]
    assert checkpoint.config.get("rope_scaling") is None
    assert checkpoint.tokenizer_source is None  # save_pretrained of a model writes none


def test_hf_rope_scaling_is_kept(tmp_path):
    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 128}
    _save_tiny(tmp_path, "llama", rope_parameters={"rope_theta": 500000.0, **scaling})
    config = load_checkpoint(tmp_path).config
    assert config["rope_theta"] == 500000.0
    assert config["rope_scaling"] == scaling


def test_legacy_rope_keys(tmp_path):
    _save_tiny(tmp_path, "llama")
    raw = json.loads((tmp_path / "config.json").read_text())
    del raw["rope_parameters"]
    scaling = {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 128}
    raw.update(rope_theta=20000.0, rope_scaling={"type": "llama3", **scaling})
    (tmp_path / "config.json").write_text(json.dumps(raw))
    config = load_checkpoint(tmp_path).config
    assert config["rope_theta"] == 20000.0
    assert config["rope_scaling"] == {"rope_type": "llama3", **scaling}


def test_unsupported_rope_scaling(tmp_path):
    _save_tiny(tmp_path, "llama")
    raw = json.loads((tmp_path / "config.json").read_text())
    del raw["rope_parameters"]
    raw.update(rope_theta=20000.0, rope_scaling={"type": "linear", "factor": 2.0})
    (tmp_path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(UnsupportedArchitectureError, match="rope scaling 'linear'") as info:
        load_checkpoint(tmp_path)
    assert "config.json" in str(info.value)


# --- tiny GGUF files ---------------------------------------------------------------------------


def _llama_cpp_permute(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """What llama.cpp's converter does to llama q/k rows (the forward direction)."""
    rows = weight.shape[0]
    return (weight.reshape(num_heads, 2, rows // num_heads // 2, weight.shape[1])
            .swapaxes(1, 2).reshape(weight.shape))


_HF_TO_GGUF_LAYER = {
    "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
    "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
    "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
}


def _write_tiny_gguf(path: pathlib.Path, model, arch: str):
    config = model.config
    writer = gguf_writer(path, arch, config)
    for name, tensor in model.state_dict().items():
        array = tensor.numpy()
        if name == "model.embed_tokens.weight":
            gguf_name = "token_embd.weight"
        elif name == "model.norm.weight":
            gguf_name = "output_norm.weight"
        elif name == "lm_head.weight":
            gguf_name = "output.weight"
        else:
            _, _, layer, rest = name.split(".", 3)
            gguf_name = f"blk.{layer}.{_HF_TO_GGUF_LAYER[rest.removesuffix('.weight')]}.weight"
            heads = {"attn_q": config.num_attention_heads, "attn_k": config.num_key_value_heads}
            kind = gguf_name.split(".")[2]
            if arch == "llama" and kind in heads:
                array = _llama_cpp_permute(array, heads[kind])
        writer.add_tensor(gguf_name, np.ascontiguousarray(array))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.mark.parametrize("model_type", ["llama", "qwen3"])
def test_gguf_round_trip(tmp_path, model_type):
    model = _save_tiny(tmp_path / "hf", model_type)
    _write_tiny_gguf(tmp_path / "tiny.gguf", model, model_type)
    # a directory holding exactly one .gguf is read as that file
    checkpoint = load_checkpoint(tmp_path / "tiny.gguf", cache_dir=tmp_path / "cache")
    assert load_checkpoint(tmp_path, use_cache=False).path == tmp_path / "tiny.gguf"
    expected = model.state_dict()
    assert set(checkpoint.weights) == set(expected)
    for name, weight in checkpoint.weights.items():
        assert torch.equal(weight, expected[name]), name
    hf_config = load_checkpoint(tmp_path / "hf").config
    for key in CONFIG_KEYS[:-2]:
        assert checkpoint.config[key] == pytest.approx(hf_config[key]), key


# --- errors ------------------------------------------------------------------------------------


def test_missing_path(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="does not exist") as info:
        load_checkpoint(tmp_path / "nope")
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, ValueError)
    assert str(tmp_path / "nope") in str(info.value)


def test_directory_without_config(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="no config.json"):
        load_checkpoint(tmp_path)


def test_config_without_weights(tmp_path):
    _save_tiny(tmp_path, "llama")
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(CheckpointNotFoundError, match="no weights"):
        load_checkpoint(tmp_path)


def test_missing_shard(tmp_path):
    _save_tiny(tmp_path, "qwen3", max_shard_size="40KB")
    shard = sorted(tmp_path.glob("model-*.safetensors"))[0]
    shard.unlink()
    with pytest.raises(CheckpointNotFoundError, match=shard.name):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("architecture, model_type", [
    ("MistralForCausalLM", "mistral"), ("MixtralForCausalLM", "mixtral"),
])
def test_unsupported_architecture(tmp_path, architecture, model_type):
    _save_tiny(tmp_path, "llama")
    raw = json.loads((tmp_path / "config.json").read_text())
    raw.update(architectures=[architecture], model_type=model_type)
    (tmp_path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(UnsupportedArchitectureError, match=architecture) as info:
        load_checkpoint(tmp_path)
    assert "LlamaForCausalLM" in str(info.value) and "config.json" in str(info.value)


def test_unsupported_gguf_architecture(tmp_path):
    import gguf

    writer = gguf.GGUFWriter(str(tmp_path / "m.gguf"), "gpt2")
    writer.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(UnsupportedArchitectureError, match="'gpt2'"):
        load_checkpoint(tmp_path / "m.gguf")


def test_wrong_shape(tmp_path):
    _save_tiny(tmp_path, "llama")
    raw = json.loads((tmp_path / "config.json").read_text())
    raw["intermediate_size"] = 100
    (tmp_path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match=r"mlp\.gate_proj\.weight has shape \(96, 64\)"):
        load_checkpoint(tmp_path)


def test_missing_tensor(tmp_path):
    _save_tiny(tmp_path, "qwen3")
    tensors = load_file(tmp_path / "model.safetensors")
    del tensors["model.layers.1.self_attn.k_norm.weight"]
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"missing .*model\.layers\.1\.self_attn\.k_norm"):
        load_checkpoint(tmp_path)


def test_not_a_gguf_file(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"\0" * 16)
    with pytest.raises(CheckpointError, match="not a .gguf"):
        load_checkpoint(tmp_path / "weights.bin")
    (tmp_path / "broken.gguf").write_bytes(b"\0" * 16)
    with pytest.raises(CheckpointError, match="not a readable GGUF"):
        load_checkpoint(tmp_path / "broken.gguf")


def test_several_ggufs(tmp_path):
    (tmp_path / "a.gguf").write_bytes(b"")
    (tmp_path / "b.gguf").write_bytes(b"")
    with pytest.raises(CheckpointError, match="several .gguf"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("name", ["F32", "F16", "BF16", "Q4_0", "Q4_1", "Q8_0"])
def test_dequantize_matches_gguf_py(name):
    import gguf

    from eventkernel.models.dequant import FAST_TYPES, dequantize

    qtype = gguf.GGMLQuantizationType[name]
    assert int(qtype) in FAST_TYPES
    x = np.random.default_rng(0).standard_normal((6, 96)).astype(np.float32) * 3
    raw = gguf.quants.quantize(x, qtype)
    expected = np.asarray(gguf.quants.dequantize(raw, qtype), dtype=np.float32)
    ours = dequantize(raw.view(np.uint8), int(qtype), (6, 96))
    assert ours.dtype == torch.float32 and torch.equal(ours, torch.from_numpy(expected))


def test_gguf_weights_cache(tmp_path):
    """The dequantized weights are cached once; a damaged entry is rebuilt, never trusted."""
    model = _save_tiny(tmp_path / "hf", "llama")
    _write_tiny_gguf(tmp_path / "tiny.gguf", model, "llama")
    cache = tmp_path / "cache"
    fresh = load_checkpoint(tmp_path / "tiny.gguf", cache_dir=cache)
    (entry,) = (cache / "weights").iterdir()
    assert entry.suffix == ".safetensors" and entry.name.startswith("tiny-")
    cached = load_checkpoint(tmp_path / "tiny.gguf", cache_dir=cache)
    bf16 = load_checkpoint(tmp_path / "tiny.gguf", torch.bfloat16, cache_dir=cache)
    assert {w.dtype for w in bf16.weights.values()} == {torch.bfloat16}
    size, good = entry.stat().st_size, entry.read_bytes()
    # NOTE: damaged copies are moved in (a new file): the loaded weights map the old one.
    for damaged in (good[:size // 2], b"\xff" * 64 + good[64:]):
        (tmp_path / "damaged").write_bytes(damaged)
        (tmp_path / "damaged").replace(entry)
        repaired = load_checkpoint(tmp_path / "tiny.gguf", cache_dir=cache)
        assert entry.stat().st_size == size
        for name, weight in fresh.weights.items():
            assert torch.equal(cached.weights[name], weight), name
            assert torch.equal(repaired.weights[name], weight), name
    assert not list(cache.glob("weights/.*"))     # no temporary files left behind
    load_checkpoint(tmp_path / "tiny.gguf", cache_dir=tmp_path / "off", use_cache=False)
    assert not (tmp_path / "off").exists()
