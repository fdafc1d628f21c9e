"""The built-in default model on the GPU: the API picks the CUDA backend by itself, and
greedy text equals the CPU executor's (both bf16, the same rounding points)."""
from __future__ import annotations

import pytest
import torch

from eventkernel.serve.llm import LLM
from eventkernel.serve.sampling import SamplingParams

pytestmark = pytest.mark.gpu

PROMPTS = ["What is the capital of France?", "Write a haiku about the sea.",
           "Explain what a CPU does in two sentences."]


def test_auto_backend_is_cuda_and_greedy_matches_cpu():
    gpu = LLM(max_context=256)
    assert gpu.backend_name == "cuda"
    cpu = LLM(backend="cpu", max_context=256, dtype="bf16")
    params = SamplingParams(max_tokens=32, temperature=0)
    conversations = [[{"role": "user", "content": p}] for p in PROMPTS]
    ours = gpu.chat(conversations, params)
    ref = cpu.chat(conversations, params)
    for a, b in zip(ours, ref):
        assert a.token_ids == b.token_ids, f"GPU {a.text!r} != CPU {b.text!r}"
    assert "Paris" in ours[0].text


def test_step_replays_in_a_cuda_graph():
    from eventkernel.bench.megakernel import MegakernelRunner
    from eventkernel.models.presets import tiny_config
    runner = MegakernelRunner(max_tokens=4, max_context=128)
    step = runner(tiny_config("qwen3"), 4, 100)
    backend = step.backend
    step()
    torch.cuda.synchronize()
    direct = backend.buffers["logits"][:4].clone()
    backend.buffers["logits"].fill_(float("nan"))
    graph = torch.cuda.CUDAGraph()
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        with torch.cuda.graph(graph, stream=stream):
            step()
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(backend.buffers["logits"][:4], direct)
