"""The Python API: ``LLM(model).generate(prompts, SamplingParams(...))``.

A thin front end of the engine: ``LLM`` builds the model once (through
:func:`eventkernel.build.build`) and keeps one :class:`~eventkernel.engine.engine.Engine`;
``generate`` and ``chat`` add requests and step the engine until they finish.
"""
from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from eventkernel.build import BuildOptions, BuildPlan, build, pick_backend, plan_build
from eventkernel.engine.engine import Engine, check_request
from eventkernel.engine.sampling import SamplingParams
from eventkernel.models.source import ModelSource
from eventkernel.serve.tokenizer import ByteTokenizer, load_tokenizer

__all__ = ["LLM", "RequestOutput", "GenerationStats", "SamplingParams", "RandomWeightsWarning",
           "pick_backend", "load_source_tokenizer", "check_messages"]

CHAT_ROLES = ("system", "user", "assistant", "tool")


class RandomWeightsWarning(UserWarning):
    """The model is a preset: shapes only, random weights, so its text is noise."""


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
    first_step_s: float = 0.0


def load_source_tokenizer(source: ModelSource):
    """The tokenizer of a resolved model: its own, or UTF-8 bytes for a preset."""
    if source.random_weights:
        cfg = source.hf_config
        eos = cfg.get("eos_token_id")
        return ByteTokenizer(source.config.vocab_size,
                             eos[0] if isinstance(eos, list) else eos, cfg.get("bos_token_id"))
    return load_tokenizer(source.path)


class LLM:
    """A model built for eventkernel, with its tokenizer and its engine.

    ``model``: None for the built-in SmolLM2-135M-Instruct, its name
    (``smollm2-135m-instruct``), a preset (random weights: a warning says so), a Hugging Face
    model directory, a .gguf file, a Hugging Face id in the local cache, or a
    :class:`~eventkernel.build.BuildPlan`. The keyword limits make the
    :class:`~eventkernel.build.BuildOptions`; ``options`` gives them whole instead.
    Every argument is checked before any weight is read.
    """

    def __init__(self, model: str | os.PathLike | BuildPlan | None = None, *,
                 backend: str = "auto", max_tokens_per_step: int = 64, max_seqs: int = 8,
                 max_context: int | None = None, num_workers: int | None = None,
                 dtype: str | None = None, options: BuildOptions | None = None,
                 tokenizer: Any = None) -> None:
        start = time.perf_counter()
        if isinstance(model, BuildPlan):
            plan = model
        else:
            if options is None:
                options = BuildOptions(backend=backend, max_tokens_per_step=max_tokens_per_step,
                                       max_seqs=max_seqs, max_context=max_context,
                                       num_workers=num_workers, dtype=dtype)
            plan = plan_build(model, options)
        self.plan = plan
        self.source: ModelSource = plan.source
        self.config = plan.config
        self.limits = plan.limits
        self.backend_name = plan.backend
        if self.source.random_weights:
            warnings.warn(f"{self.source.describe()}: its output is noise",
                          RandomWeightsWarning, stacklevel=2)
        t0 = time.perf_counter()
        self.tokenizer = tokenizer or load_source_tokenizer(self.source)
        tokenizer_s = time.perf_counter() - t0
        built = build(plan)
        self.compiled = built.compiled
        self.backend = built.backend
        self.engine = Engine(self.backend, self.tokenizer)
        self.startup_s = {**built.timings, "tokenizer": tokenizer_s}
        self.load_s = time.perf_counter() - start
        self.last_stats = GenerationStats()

    def generate(self, prompts: str | bytes | Sequence[str | bytes | Sequence[int]],
                 sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
                 on_token: Callable[[int, int], Any] | None = None) -> list[RequestOutput]:
        """Complete each prompt (text, UTF-8 bytes, or a list of token ids); returns text and
        ids per prompt. ``on_token(index, token)`` sees every sampled token as it comes."""
        if isinstance(prompts, (str, bytes)):
            prompts = [prompts]
        if not isinstance(prompts, (list, tuple)):
            raise TypeError(f"prompts must be a str or a list of prompts, got "
                            f"{type(prompts).__name__}")
        texts, ids = [], []
        for i, prompt in enumerate(prompts):
            text = _as_text(prompt, i)
            if text is not None:
                if not text:
                    raise ValueError(f"prompt {i} is empty: give some text")
                texts.append(text)
                ids.append(self.tokenizer.encode(text))
            elif isinstance(prompt, (list, tuple)):
                texts.append(None)
                ids.append(prompt)
            else:
                raise TypeError(f"prompt {i} is {prompt!r} ({type(prompt).__name__}): a prompt "
                                f"is a str or a list of token ids (one prompt of ids: "
                                f"[[1, 2, 3]])")
        return self._run(texts, ids, sampling_params, on_token)

    def chat(self, messages: Sequence[dict] | Sequence[Sequence[dict]],
             sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
             on_token: Callable[[int, int], Any] | None = None) -> list[RequestOutput]:
        """Chat completions through the model's chat template: one conversation (a list of
        ``{"role", "content"}`` messages) or a list of them."""
        if not isinstance(messages, (list, tuple)) or not messages:
            raise ValueError("chat needs a non-empty list of messages "
                             "([{'role': 'user', 'content': '...'}])")
        conversations = [messages] if isinstance(messages[0], dict) else messages
        for i, conversation in enumerate(conversations):
            check_messages(conversation, i)
        ids = [self.tokenizer.apply_chat_template(list(c)) for c in conversations]
        return self._run([None] * len(ids), ids, sampling_params, on_token)

    def _run(self, texts, ids, sampling_params, on_token) -> list[RequestOutput]:
        n = len(ids)
        params = _per_request(sampling_params, n)
        # Every request is checked before any is added: a bad one leaves the engine as it was.
        ids = [check_request(p, s, self.limits, self.config.vocab_size, i)
               for i, (p, s) in enumerate(zip(ids, params))]
        engine = self.engine
        index = {engine.add_request(p, s): i for i, (p, s) in enumerate(zip(ids, params))}
        outputs = [RequestOutput(texts[i], list(ids[i])) for i in range(n)]
        stats = GenerationStats(prompt_tokens=sum(len(p) for p in ids))
        try:
            while any(o.finish_reason is None for o in outputs):
                step = engine.step()
                info = engine.last_step
                if info is not None:
                    stats.steps += 1
                    stats.first_step_s = stats.first_step_s or info.seconds
                    if info.prefill or not stats.generated_tokens:
                        stats.prefill_s += info.seconds
                    else:
                        stats.decode_s += info.seconds
                        stats.decode_steps += 1
                for out in step:
                    i = index.get(out.request_id)
                    if i is None:
                        continue
                    stats.generated_tokens += 1
                    if on_token is not None:
                        on_token(i, out.token_id)
                    if out.finished:
                        result = outputs[i]
                        result.token_ids = list(out.output_ids)
                        result.text, result.finish_reason = out.text, out.finish_reason
        finally:   # interrupted (Ctrl-C, an error in on_token): the engine stays usable
            for request_id, i in index.items():
                if outputs[i].finish_reason is None:
                    engine.abort(request_id)
            self.last_stats = stats
        return outputs


def check_messages(conversation: Any, index: int = 0) -> None:
    """A conversation is a non-empty list of {"role": system|user|assistant|tool,
    "content": str} messages; raises ValueError naming the first bad one."""
    what = f"conversation {index}"
    if not isinstance(conversation, (list, tuple)) or not conversation:
        raise ValueError(f"{what} must be a non-empty list of messages")
    for j, message in enumerate(conversation):
        if not isinstance(message, dict):
            raise ValueError(f"{what}, message {j}: a message is a dict with 'role' and "
                             f"'content', got {type(message).__name__}")
        role = message.get("role")
        if role not in CHAT_ROLES:
            raise ValueError(f"{what}, message {j}: 'role' must be one of "
                             f"{', '.join(CHAT_ROLES)}, got {role!r}")
        if not isinstance(message.get("content"), str):
            raise ValueError(f"{what}, message {j}: 'content' must be a str, got "
                             f"{type(message.get('content')).__name__}")


def _as_text(prompt: Any, index: int) -> str | None:
    """The prompt's text (bytes decoded as UTF-8), or None when it is not text."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, (bytes, bytearray)):
        try:
            return bytes(prompt).decode("utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(f"prompt {index} is bytes but not valid UTF-8 ({err.reason} at "
                             f"byte {err.start}); pass text as a str, or token ids as a list "
                             f"of ints") from None
    return None


def _per_request(sampling_params, n: int) -> list[SamplingParams]:
    if sampling_params is None:
        return [SamplingParams()] * n
    if isinstance(sampling_params, SamplingParams):
        return [sampling_params] * n
    if not isinstance(sampling_params, (list, tuple)):
        raise TypeError(f"sampling_params must be a SamplingParams or a list of them, got "
                        f"{type(sampling_params).__name__}: build one with "
                        f"SamplingParams(max_tokens=..., temperature=...)")
    params = list(sampling_params)
    if len(params) != n:
        raise ValueError(f"got {len(params)} SamplingParams for {n} prompts")
    return params
