"""Every bad argument, limit, prompt and message gets one clear error, before any weight is
read where it can be; nothing bad is silently accepted. A preset (random weights) keeps it
fast."""
from __future__ import annotations

import math

import pytest

import eventkernel.build as build_module
from eventkernel.build import BuildError, BuildOptions, plan_build
from eventkernel.models.checkpoint import CheckpointNotFoundError
from eventkernel.serve.llm import LLM, RandomWeightsWarning
from eventkernel.serve.sampling import SamplingParams

MODEL = "tiny-llama"            # vocabulary 256, 1024 positions


@pytest.fixture(scope="module")
def llm():
    with pytest.warns(RandomWeightsWarning, match="random weights"):
        return LLM(MODEL, backend="cpu", max_context=128)


@pytest.fixture
def no_weights(monkeypatch):
    """Reading weights fails the test: the error must come before."""
    def read(*args, **kwargs):
        raise AssertionError("weights were read before the bad input was noticed")
    monkeypatch.setattr(build_module, "_graph_weights", read)


# --- prompts and sampling parameters (the model is loaded once) ------------------------

@pytest.mark.parametrize("prompts, error, message", [
    ([b"\xff\xfe hi"], ValueError, "not valid UTF-8"),
    ([[-1]], ValueError, r"token id -1 .* outside the model's vocabulary \[0, 256\)"),
    ([[999999]], ValueError, "token id 999999 .* outside"),
    ([[]], ValueError, "prompt 0 is empty"),
    ("", ValueError, "prompt 0 is empty"),
    ([[1] * 200], ValueError, "over the 128 tokens of context"),
    ([[1.5]], TypeError, "not an int"),
    ([[True]], TypeError, "not an int"),
    ([1, 2, 3], TypeError, r"a prompt is a str or a list of token ids"),
    (7, TypeError, "prompts must be a str or a list"),
])
def test_bad_prompt(llm, prompts, error, message):
    with pytest.raises(error, match=message):
        llm.generate(prompts, SamplingParams(max_tokens=2))


def test_max_tokens_over_the_context(llm):
    with pytest.raises(ValueError, match="asks for 1000000000 more, over the 128 tokens"):
        llm.generate("hi", SamplingParams(max_tokens=10**9))


@pytest.mark.parametrize("params", [{"max_tokens": 4}, 4, "greedy"])
def test_sampling_params_must_be_sampling_params(llm, params):
    with pytest.raises(TypeError, match="SamplingParams"):
        llm.generate("hi", params)


@pytest.mark.parametrize("kwargs, message", [
    ({"max_tokens": 0}, "max_tokens"), ({"temperature": math.nan}, "temperature"),
    ({"top_p": 0}, "top_p"), ({"stop": [""]}, "stop"),
])
def test_sampling_params_check_their_fields(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SamplingParams(**kwargs)


@pytest.mark.parametrize("messages, message", [
    ([{"content": "hi"}], "'role' must be one of system, user, assistant, tool"),
    ([{"role": "robot", "content": "hi"}], "'role' must be one of"),
    ([{"role": "user", "content": 3}], "'content' must be a str"),
    ([{"role": "user"}], "'content' must be a str"),
    ([], "non-empty list of messages"),
    ([[{"role": "user", "content": "a"}], ["hi"]], "conversation 1, message 0"),
])
def test_bad_chat_messages(llm, messages, message):
    with pytest.raises(ValueError, match=message):
        llm.chat(messages, SamplingParams(max_tokens=2))


def test_bytes_prompt_is_utf8_text(llm):
    params = SamplingParams(max_tokens=2, temperature=0)
    assert llm.generate([b"hi"], params)[0].token_ids == llm.generate("hi", params)[0].token_ids


def test_a_bad_request_leaves_the_engine_as_it_was(llm):
    with pytest.raises(ValueError, match="prompt 1"):
        llm.generate(["fine", [-1]], SamplingParams(max_tokens=2))
    assert not llm.engine.has_unfinished()
    out = llm.generate("fine", SamplingParams(max_tokens=3, temperature=0))[0]
    assert len(out.token_ids) == 3 and out.finish_reason == "length"


def test_an_error_in_on_token_aborts_the_requests(llm):
    def on_token(index, token):
        raise RuntimeError("client went away")
    with pytest.raises(RuntimeError, match="client went away"):
        llm.generate(["a", "b"], SamplingParams(max_tokens=5), on_token=on_token)
    assert not llm.engine.has_unfinished() and len(llm.engine.blocks.tables) == 0


# --- arguments and limits: checked before any weight is read ---------------------------

@pytest.mark.parametrize("kwargs, message", [
    ({"max_context": 0}, "max_context must be a positive integer"),
    ({"max_context": 100000}, "max_context 100000 is over the 1024 positions"),
    ({"max_context": 1.5}, "max_context must be a positive integer"),
    ({"max_seqs": 9, "max_tokens_per_step": 8}, "cannot exceed"),
    ({"backend": "tpu"}, "backend must be one of auto, cpu, cuda"),
    ({"dtype": "fp16"}, "dtype must be bf16 or f32"),
    ({"num_workers": 0}, "num_workers must be a positive"),
])
def test_bad_limits_fail_before_loading(no_weights, kwargs, message):
    with pytest.raises(BuildError, match=message):
        LLM(MODEL, **{"backend": "cpu", **kwargs})


def test_cuda_without_a_gpu_fails_before_loading(no_weights):
    if build_module.cuda_problem() is None:
        pytest.skip("a Hopper GPU is here")
    with pytest.raises(BuildError, match="the CUDA backend cannot run here.*--backend cpu"):
        LLM(MODEL, backend="cuda")


def test_context_over_memory_names_both_numbers(no_weights, monkeypatch):
    monkeypatch.setattr(build_module, "available_memory", lambda backend: (8 << 30, "RAM"))
    with pytest.raises(BuildError, match=r"max_context 131072 x max_seqs 8 needs a KV cache of "
                                         r"34\.4 GB \(32768 bytes per token\) plus 2\.5 GB of "
                                         r"weights, but this machine has 8\.6 GB of RAM; use "
                                         r"--max-context \d+ or less"):
        LLM("llama-3.2-1b", backend="cpu", max_context=131072, dtype="bf16")
    monkeypatch.setattr(build_module, "available_memory", lambda backend: (2 << 30, "RAM"))
    with pytest.raises(BuildError, match="the weights alone do not fit"):
        LLM("llama-3.2-1b", backend="cpu", dtype="bf16")


def test_default_context_fits_the_model_and_the_memory(monkeypatch):
    assert plan_build(MODEL, BuildOptions(backend="cpu")).limits.max_context == 1024
    assert plan_build("smollm2-135m", BuildOptions(backend="cpu")).limits.max_context == 4096
    monkeypatch.setattr(build_module, "available_memory", lambda backend: (6 << 30, "RAM"))
    fitted = plan_build("llama-3.2-1b", BuildOptions(backend="cpu")).limits.max_context
    assert 16 <= fitted < 4096 and fitted % 16 == 0


def test_unknown_model_says_nothing_is_downloaded(no_weights):
    with pytest.raises(CheckpointNotFoundError, match="downloads nothing"):
        LLM("no-such-org/no-such-model", backend="cpu")


def test_hugging_face_id_resolves_from_the_local_cache(tmp_path, monkeypatch):
    import json

    from safetensors.torch import save_file

    from eventkernel.models.config import ModelConfig
    from eventkernel.models.decoder import random_checkpoint
    from eventkernel.models.presets import preset_config
    snapshot = tmp_path / "models--some-org--tiny" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    cfg = preset_config(MODEL)
    (snapshot / "config.json").write_text(json.dumps(cfg))
    save_file(random_checkpoint(ModelConfig.from_hf(cfg)), snapshot / "model.safetensors")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    plan = plan_build("some-org/tiny", BuildOptions(backend="cpu"))
    assert plan.source.kind == "hf-cache" and plan.source.path == snapshot
    assert not plan.source.random_weights
