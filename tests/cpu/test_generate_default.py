"""End to end on the CPU: the built-in default model against transformers."""
from __future__ import annotations

import pytest
import torch
import transformers

from eventkernel.models.default import default_model_path
from eventkernel.serve.llm import LLM
from eventkernel.serve.sampling import SamplingParams

PROMPTS = ["Write a long story about a dragon who learns to cook.",
           "Explain step by step how a bicycle works.",
           "List twenty animals that live in the ocean."]
NEW_TOKENS = 32


@pytest.fixture(scope="module")
def llm():
    llm = LLM("smollm2-135m-instruct", backend="cpu", max_context=256)   # the built-in, by name
    assert llm.source.kind == "builtin"
    return llm


@pytest.fixture(scope="module")
def hf_greedy():
    path = default_model_path()
    model = transformers.AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32, local_files_only=True).eval()

    def generate(ids: list[int]) -> list[int]:
        with torch.no_grad():
            out = model.generate(torch.tensor([ids]), max_new_tokens=NEW_TOKENS, do_sample=False,
                                 attention_mask=torch.ones(1, len(ids), dtype=torch.long))
        return out[0, len(ids):].tolist()
    return generate


def test_greedy_equals_transformers_batched_and_alone(llm, hf_greedy):
    conversations = [[{"role": "user", "content": p}] for p in PROMPTS]
    params = SamplingParams(max_tokens=NEW_TOKENS, temperature=0)
    batched = llm.chat(conversations, params)
    for conv, out in zip(conversations, batched):
        ids = llm.tokenizer.apply_chat_template(conv)
        expected = hf_greedy(ids)
        assert len(out.token_ids) == NEW_TOKENS
        assert out.token_ids == expected[:NEW_TOKENS], f"batched: {out.text!r}"
        alone = llm.chat(conv, params)[0]
        assert alone.token_ids == out.token_ids


def test_capital_of_france(llm):
    out = llm.chat([{"role": "user", "content": "What is the capital of France?"}],
                   SamplingParams(max_tokens=24, temperature=0))
    assert "Paris" in out[0].text


def test_seeded_sampling_is_reproducible(llm):
    params = SamplingParams(max_tokens=8, temperature=0.8, top_p=0.9, top_k=50, seed=123)
    a = llm.generate("Once upon a time", params)[0]
    b = llm.generate(["Once upon a time", "Hello"], params)[0]
    assert a.token_ids == b.token_ids and len(a.token_ids) > 0


def test_stop_string(llm):
    out = llm.chat([{"role": "user", "content": "Count from 1 to 10."}],
                   SamplingParams(max_tokens=40, temperature=0, stop=["5"]))[0]
    assert "5" not in out.text and out.finish_reason == "stop"


def test_bad_inputs(llm, tmp_path):
    with pytest.raises(FileNotFoundError, match="not an existing path"):
        LLM(tmp_path / "missing", backend="cpu")
    with pytest.raises(ValueError, match="max_tokens"):
        SamplingParams(max_tokens=0)
    with pytest.raises(ValueError, match="context"):
        llm.generate("word " * 400, SamplingParams(max_tokens=4))
    (tmp_path / "config.json").write_text('{"model_type": "gpt2", "architectures": '
                                          '["GPT2LMHeadModel"]}')
    with pytest.raises(ValueError, match="unsupported|not supported"):
        LLM(tmp_path, backend="cpu")


def test_cuda_path_builds_for_the_device(monkeypatch):
    """The API's CUDA path, with the GPU faked: the program is cut for the device's SM
    count and handed to the CUDA backend in bf16 (a GPU run once crashed right here)."""
    import eventkernel.build as build_module
    import eventkernel.cuda.backend as cuda_backend
    import eventkernel.cuda.launch as launch

    built = {}

    class FakeCudaBackend:
        def __init__(self, compiled, weights):
            built["compiled"], built["weights"] = compiled, weights
            self.compiled = compiled

    monkeypatch.setattr(build_module, "cuda_problem", lambda: None)
    monkeypatch.setattr(build_module, "available_memory", lambda backend: (80 << 30, "GPU"))
    monkeypatch.setattr(launch, "device_info", lambda *a, **k: launch.DeviceInfo(
        ordinal=0, name="fake H100", sm_count=7, compute_capability=(9, 0),
        max_shared_per_block_optin=227 * 1024, l2_bytes=50 << 20))
    monkeypatch.setattr(cuda_backend, "CudaBackend", FakeCudaBackend)
    real_load, asked = build_module.load_weights, []

    def load_here(source, dtype, device):         # there is no GPU to load onto
        asked.append((device, dtype))
        return real_load(source, dtype, device="cpu")

    monkeypatch.setattr(build_module, "load_weights", load_here)
    gpu = LLM(max_context=128)
    import torch
    assert asked == [("cuda", torch.bfloat16)]     # straight to the GPU, in bf16
    assert gpu.backend_name == "cuda"
    assert isinstance(gpu.backend, FakeCudaBackend)
    assert built["compiled"] is gpu.compiled
    assert gpu.limits.dtype.name == "BF16"
    assert gpu.compiled.target.num_workers == 7
