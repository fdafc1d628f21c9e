"""The Python API: ``LLM(model).generate(prompts, SamplingParams(...))``."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from eventkernel.compiler import Compiled, compile_model
from eventkernel.engine.engine import Engine
from eventkernel.ir.graph import DType
from eventkernel.lower import Target
from eventkernel.models.checkpoint import load_checkpoint
from eventkernel.models.config import Limits, ModelConfig
from eventkernel.models.decoder import graph_weights
from eventkernel.models.default import default_model_path
from eventkernel.serve.sampling import Sampler, SamplingParams, find_stop, make_generator
from eventkernel.serve.tokenizer import load_tokenizer


@dataclass
class RequestOutput:
    prompt: str | None
    prompt_token_ids: list[int]
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    finish_reason: str | None = None         # "stop" | "length"


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    generated_tokens: int = 0
    steps: int = 0
    prefill_s: float = 0.0
    decode_s: float = 0.0
    decode_steps: int = 0


def pick_backend(requested: str) -> str:
    """'auto' -> 'cuda' on a Hopper GPU with the CUDA toolchain, else 'cpu'."""
    if requested not in ("auto", "cpu", "cuda"):
        raise ValueError(f"backend must be auto, cpu or cuda, got {requested!r}")
    if requested == "cpu":
        return "cpu"
    problem = _cuda_problem()
    if requested == "cuda" and problem:
        raise RuntimeError(f"the CUDA backend cannot run here: {problem}; use --backend cpu")
    return "cpu" if problem else "cuda"


def _cuda_problem() -> str | None:
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible"
    major, minor = torch.cuda.get_device_capability()
    if (major, minor) != (9, 0):
        return (f"{torch.cuda.get_device_name()} is sm_{major}{minor}; the megakernel needs a "
                f"Hopper GPU (sm_90)")
    try:
        from eventkernel.cuda import backend as _  # noqa: F401
    except ImportError as err:
        return f"the CUDA backend is not available ({err})"
    return None


class LLM:
    """A model compiled for eventkernel, with its tokenizer.

    ``model``: a Hugging Face model directory or a .gguf file; None for the built-in
    default (SmolLM2-135M-Instruct). ``backend``: "auto", "cpu" or "cuda".
    """

    def __init__(self, model: str | os.PathLike | None = None, *, backend: str = "auto",
                 max_tokens_per_step: int = 64, max_seqs: int = 8, max_context: int = 1024,
                 num_workers: int | None = None, dtype: str | None = None) -> None:
        path = default_model_path() if model is None else model
        self.backend_name = pick_backend(backend)
        checkpoint = load_checkpoint(path)
        self.config = ModelConfig.from_hf(checkpoint.config)
        self.tokenizer = load_tokenizer(checkpoint.tokenizer_source or path)
        dtype = dtype or ("bf16" if self.backend_name == "cuda" else "f32")
        if dtype not in ("bf16", "f32"):
            raise ValueError(f"dtype must be bf16 or f32, got {dtype!r}")
        self.limits = Limits(max_tokens=max_tokens_per_step, max_seqs=max_seqs,
                             max_context=max_context,
                             dtype=DType.BF16 if dtype == "bf16" else DType.F32)
        if self.backend_name == "cuda":
            from eventkernel.cuda.launch import device_info
            workers = device_info().sm_count
            target = Target(num_workers=workers)
        else:
            from eventkernel.cpu.plan import cpu_plan
            plan = cpu_plan(num_workers)
            workers, target = plan.num_workers, plan.target
        start = time.perf_counter()
        self.compiled: Compiled = compile_model(self.config, self.limits, target)
        weights = graph_weights(self.compiled.graph, checkpoint.weights)
        if self.backend_name == "cuda":
            from eventkernel.cuda.backend import CudaBackend
            self.backend = CudaBackend(self.compiled, weights)
        else:
            from eventkernel.cpu.backend import CpuBackend
            self.backend = CpuBackend(self.compiled, weights, num_workers=workers,
                                      poison_intermediates=False)
        self.load_s = time.perf_counter() - start
        self.sampler = Sampler()
        self.last_stats = GenerationStats()

    def generate(self, prompts: str | Sequence[str] | Sequence[Sequence[int]],
                 sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
                 on_token: Callable[[int, int], Any] | None = None) -> list[RequestOutput]:
        """Complete each prompt (text, or token ids); returns text and ids per prompt."""
        if isinstance(prompts, str):
            prompts = [prompts]
        ids = [self.tokenizer.encode(p) if isinstance(p, str) else list(p) for p in prompts]
        texts = [p if isinstance(p, str) else None for p in prompts]
        return self._run(texts, ids, sampling_params, on_token)

    def chat(self, messages: Sequence[dict] | Sequence[Sequence[dict]],
             sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
             on_token: Callable[[int, int], Any] | None = None) -> list[RequestOutput]:
        """Chat completions through the model's chat template."""
        conversations = [messages] if messages and isinstance(messages[0], dict) else messages
        ids = [self.tokenizer.apply_chat_template(list(c)) for c in conversations]
        return self._run([None] * len(ids), ids, sampling_params, on_token)

    def _run(self, texts, ids, sampling_params, on_token) -> list[RequestOutput]:
        n = len(ids)
        params = _per_request(sampling_params, n)
        for i, p in enumerate(ids):
            if not p:
                raise ValueError(f"prompt {i} is empty")
            if len(p) + params[i].max_tokens > self.limits.max_context:
                raise ValueError(
                    f"prompt {i} has {len(p)} tokens and asks for {params[i].max_tokens} more, "
                    f"over the {self.limits.max_context} tokens of context this model was "
                    f"compiled for; shorten it, lower max_tokens or raise max_context")
        engine = Engine(self.backend, self.limits)
        outputs = [RequestOutput(texts[i], list(ids[i])) for i in range(n)]
        generators = [None if p.greedy else make_generator(p) for p in params]
        stats = GenerationStats(prompt_tokens=sum(len(p) for p in ids))
        for i, p in enumerate(ids):
            engine.add(i, p)
        active = set(range(n))
        while active:
            start = time.perf_counter()
            prefill = any(len(engine.seqs[i].pending) > 1 for i in active)
            logits = engine.step()
            elapsed = time.perf_counter() - start
            stats.steps += 1
            if prefill or not stats.generated_tokens:
                stats.prefill_s += elapsed
            else:
                stats.decode_s += elapsed
                stats.decode_steps += 1
            ready = sorted(logits)
            if not ready:
                continue
            tokens = self.sampler.sample(torch.stack([logits[i] for i in ready]),
                                         [params[i] for i in ready],
                                         [generators[i] for i in ready])
            for i, tok in zip(ready, tokens.tolist()):
                out, p = outputs[i], params[i]
                out.token_ids.append(tok)
                stats.generated_tokens += 1
                if on_token is not None:
                    on_token(i, tok)
                if tok in self.tokenizer.eos_token_ids and not p.ignore_eos:
                    out.finish_reason = "stop"
                    out.token_ids.pop()
                elif len(out.token_ids) >= p.max_tokens:
                    out.finish_reason = "length"
                out.text = self.tokenizer.decode(out.token_ids)
                cut = find_stop(out.text, p.stop)
                if cut is not None:
                    out.text, out.finish_reason = out.text[:cut], "stop"
                if out.finish_reason:
                    active.discard(i)
                    engine.release(i)
                else:
                    engine.seqs[i].tokens.append(tok)
        self.last_stats = stats
        return outputs


def _per_request(sampling_params, n: int) -> list[SamplingParams]:
    if sampling_params is None:
        return [SamplingParams()] * n
    if isinstance(sampling_params, SamplingParams):
        return [sampling_params] * n
    params = list(sampling_params)
    if len(params) != n:
        raise ValueError(f"got {len(params)} SamplingParams for {n} prompts")
    return params
