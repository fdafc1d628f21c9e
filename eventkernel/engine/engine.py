"""The engine: requests in, one step at a time (schedule -> run -> postprocess), tokens out.

The Python API and the HTTP server are two front ends of this loop: they add requests,
call :meth:`Engine.step` while :meth:`Engine.has_unfinished`, and read its outputs.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Protocol, Sequence as Seq

import torch

from eventkernel.engine.kv_cache import BlockManager
from eventkernel.engine.sampling import Sampler, SamplingParams, find_stop, make_generator
from eventkernel.engine.scheduler import Scheduler
from eventkernel.engine.sequence import Sequence
from eventkernel.engine.step import build_step
from eventkernel.models.config import Limits


class Detokenizer(Protocol):
    """What the engine needs of a tokenizer: the ids that end a generation, and text."""

    eos_token_ids: frozenset[int]

    def decode(self, ids: Seq[int]) -> str: ...


@dataclass(frozen=True, slots=True)
class StepOutput:
    """One request's result of a step: the token it sampled (an EOS that ends it included),
    and, when it finished, why, its generated ids (without that EOS) and their text."""

    request_id: int
    token_id: int
    finished: bool = False
    finish_reason: str | None = None        # "stop" | "length"
    output_ids: tuple[int, ...] = ()         # set when finished
    text: str | None = None                  # set when finished (with a tokenizer)
    logits: torch.Tensor | None = None       # [vocab] the token was sampled from (keep_logits)


@dataclass(frozen=True, slots=True)
class StepInfo:
    """What the last step carried and how long it took (for the API's statistics)."""

    num_tokens: int
    num_seqs: int
    prefill: bool          # it carried prompt tokens
    seconds: float


def check_request(prompt_ids: Any, params: Any, limits: Limits, vocab_size: int,
                  index: int | None = None) -> list[int]:
    """Check one request against the compiled limits and the vocabulary; returns the ids as
    a list. Raises TypeError / ValueError saying what is wrong and what to do."""
    what = "the prompt" if index is None else f"prompt {index}"
    if not isinstance(params, SamplingParams):
        raise TypeError(f"sampling params must be a SamplingParams, got "
                        f"{type(params).__name__}: build one with SamplingParams(max_tokens=..., "
                        f"temperature=...)")
    if isinstance(prompt_ids, (str, bytes)) or not isinstance(prompt_ids, (list, tuple)):
        raise TypeError(f"{what}'s token ids must be a list of ints, got "
                        f"{type(prompt_ids).__name__}")
    ids = list(prompt_ids)
    if not ids:
        raise ValueError(f"{what} is empty: give at least one token")
    for position, token in enumerate(ids):
        if not isinstance(token, int) or isinstance(token, bool):
            raise TypeError(f"{what}: token {position} is {token!r}, not an int")
        if not 0 <= token < vocab_size:
            raise ValueError(f"{what}: token id {token} (at {position}) is outside the "
                             f"model's vocabulary [0, {vocab_size})")
    if len(ids) + params.max_tokens > limits.max_context:
        raise ValueError(
            f"{what} has {len(ids)} tokens and asks for {params.max_tokens} more, over the "
            f"{limits.max_context} tokens of context this model was built for; shorten it, "
            f"lower max_tokens or raise max_context")
    return ids


class Engine:
    """Runs requests through a backend, a step at a time, and finishes them.

    ``backend``: a CPU or CUDA backend (``run(StepInputs) -> result with .logits``, and its
    ``compiled`` program); ``tokenizer``: gives the EOS ids and decodes outputs (stop
    strings, final text); None: token ids only (no EOS, no text, no stop strings).
    ``keep_logits``: each output carries the logits it sampled from.
    """

    def __init__(self, backend: Any, tokenizer: Detokenizer | None = None,
                 keep_logits: bool = False) -> None:
        self.backend = backend
        self.tokenizer = tokenizer
        self.keep_logits = keep_logits
        self.limits: Limits = backend.compiled.limits
        self.vocab_size: int = backend.compiled.config.vocab_size
        self.blocks = BlockManager(self.limits.total_pages, self.limits.page_size,
                                   self.limits.pages_per_seq)
        self.scheduler = Scheduler(self.limits, self.blocks)
        self.sampler = Sampler()
        self.seqs: dict[int, Sequence] = {}
        self.last_step: StepInfo | None = None
        self._next_id = 0

    def add_request(self, prompt_ids: Seq[int], params: SamplingParams) -> int:
        """Queue a request; returns its id (checked first: see :func:`check_request`)."""
        ids = check_request(prompt_ids, params, self.limits, self.vocab_size)
        if params.stop and self.tokenizer is None:
            raise ValueError("stop strings need text: this engine has no tokenizer")
        request_id, self._next_id = self._next_id, self._next_id + 1
        seq = Sequence(request_id, ids, len(ids), params,
                       None if params.greedy else make_generator(params))
        self.seqs[request_id] = seq
        self.scheduler.add(seq)
        return request_id

    def abort(self, request_id: int) -> bool:
        """Drop a request and free its KV pages; False if it is not (or no longer) here."""
        seq = self.seqs.pop(request_id, None)
        if seq is None:
            return False
        self.scheduler.finish(seq, "abort")
        return True

    def has_unfinished(self) -> bool:
        return self.scheduler.has_unfinished()

    def step(self) -> list[StepOutput]:
        """Schedule, run one step, postprocess: an output per request that sampled a token
        (a request in the middle of its prompt samples nothing this step)."""
        chunks = self.scheduler.schedule()
        if not chunks:
            if self.scheduler.waiting:
                raise RuntimeError("no request fits in the KV cache: raise num_pages or "
                                   "max_context, or shorten the prompts")
            return []
        start = time.perf_counter()
        prefill = any(seq.in_prompt for seq, _ in chunks)
        inputs = build_step([(s.request_id, s.num_cached, new) for s, new in chunks],
                            self.blocks)
        logits = self.backend.run(inputs).logits
        self.last_step = StepInfo(inputs.num_tokens, inputs.num_seqs, prefill,
                                  time.perf_counter() - start)
        return self._postprocess(chunks, logits)

    def _postprocess(self, chunks: list[tuple[Sequence, list[int]]],
                     logits: torch.Tensor) -> list[StepOutput]:
        ready = []
        for row, (seq, new) in enumerate(chunks):
            seq.num_cached += len(new)
            if not seq.pending:                # its last token was in: it samples
                ready.append((row, seq))
        if not ready:
            return []
        tokens = self.sampler.sample(logits[[row for row, _ in ready]],
                                     [seq.params for _, seq in ready],
                                     [seq.generator for _, seq in ready])
        outputs = [self._append(seq, token) for (_, seq), token in zip(ready, tokens.tolist())]
        if self.keep_logits:
            outputs = [dataclasses.replace(out, logits=logits[row])
                       for out, (row, _) in zip(outputs, ready)]
        return outputs

    def _append(self, seq: Sequence, token: int) -> StepOutput:
        """Add ``token`` to ``seq``, then finish it on EOS, max_tokens or a stop string."""
        params = seq.params
        reason = None
        eos = self.tokenizer.eos_token_ids if self.tokenizer is not None else ()
        if token in eos and not params.ignore_eos:
            reason = "stop"
        else:
            seq.output_ids.append(token)
            if len(seq.output_ids) >= params.max_tokens:
                reason = "length"
        if params.stop:
            seq.text = self.tokenizer.decode(seq.output_ids)
            cut = find_stop(seq.text, params.stop)
            if cut is not None:
                seq.text, reason = seq.text[:cut], "stop"
        if reason is None:
            seq.tokens.append(token)
            return StepOutput(seq.request_id, token)
        text = seq.text if params.stop else (
            None if self.tokenizer is None else self.tokenizer.decode(seq.output_ids))
        self.scheduler.finish(seq, reason)
        del self.seqs[seq.request_id]
        return StepOutput(seq.request_id, token, True, reason, tuple(seq.output_ids), text)
