"""The engine: sequences, paged KV cache and steps (schedule -> run -> postprocess)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from eventkernel.engine.kv_cache import BlockManager
from eventkernel.engine.step import build_step
from eventkernel.models.config import Limits


@dataclass
class Sequence:
    seq_id: int
    tokens: list[int]                 # prompt + generated so far
    num_cached: int = 0               # tokens whose K/V are in the cache
    finished: bool = False
    logits: list[torch.Tensor] = field(default_factory=list)

    @property
    def pending(self) -> list[int]:
        return self.tokens[self.num_cached:]


class Engine:
    """Feeds sequences through a backend in steps of at most ``max_tokens`` tokens.

    Decoding sequences go first (one token each), then prompt chunks fill the rest of
    the step (chunked prefill): decode and prefill are the same kind of step.
    """

    def __init__(self, backend, limits: Limits) -> None:
        self.backend = backend
        self.limits = limits
        self.blocks = BlockManager(limits.total_pages, limits.page_size, limits.pages_per_seq)
        self.seqs: dict[int, Sequence] = {}

    def add(self, seq_id: int, prompt: list[int]) -> Sequence:
        if not prompt:
            raise ValueError("a prompt must have at least one token")
        if len(prompt) >= self.limits.max_context:
            raise ValueError(f"the prompt has {len(prompt)} tokens; this model was compiled for "
                             f"at most {self.limits.max_context} tokens of context "
                             f"(--max-context)")
        seq = Sequence(seq_id, list(prompt))
        self.seqs[seq_id] = seq
        return seq

    def release(self, seq_id: int) -> None:
        self.blocks.release(seq_id)
        self.seqs.pop(seq_id, None)

    def schedule(self) -> list[tuple[Sequence, list[int]]]:
        budget = self.limits.max_tokens
        chunks: list[tuple[Sequence, list[int]]] = []
        live = [s for s in self.seqs.values() if not s.finished and s.pending]
        live.sort(key=lambda s: len(s.pending) > 1)          # decodes first
        for seq in live:
            if budget == 0 or len(chunks) == self.limits.max_seqs:
                break
            take = seq.pending[:budget]
            chunks.append((seq, take))
            budget -= len(take)
        return chunks

    def step(self) -> dict[int, torch.Tensor]:
        """Run one step; returns next-token logits of each sequence that reached its end."""
        chunks = self.schedule()
        if not chunks:
            return {}
        inputs = build_step([(s.seq_id, s.num_cached, new) for s, new in chunks], self.blocks)
        result = self.backend.run(inputs)
        out = {}
        for i, (seq, new) in enumerate(chunks):
            seq.num_cached += len(new)
            if not seq.pending:
                out[seq.seq_id] = result.logits[i]
        return out
