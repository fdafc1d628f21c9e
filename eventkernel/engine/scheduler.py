"""Which sequences a step carries, and how many of their tokens (chunked prefill)."""
from __future__ import annotations

from collections import deque

from eventkernel.engine.kv_cache import BlockManager
from eventkernel.engine.sequence import Sequence, Status
from eventkernel.models.config import Limits


class Scheduler:
    """Waiting and running sequences; packs each step into the compiled limits.

    A waiting sequence is admitted while fewer than ``max_seqs`` run and the KV cache can
    hold its prompt. Each step takes the running sequences' decodes first (one token each),
    then prompt chunks fill the rest of the token budget: decode and prefill are the same
    kind of step.
    """

    def __init__(self, limits: Limits, blocks: BlockManager) -> None:
        self.limits = limits
        self.blocks = blocks
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> list[tuple[Sequence, list[int]]]:
        """(sequence, its new tokens) for the next step, decodes first."""
        while (self.waiting and len(self.running) < self.limits.max_seqs
               and self.blocks.can_allocate(self.waiting[0].request_id,
                                            len(self.waiting[0].tokens))):
            seq = self.waiting.popleft()
            seq.status = Status.RUNNING
            self.running.append(seq)
        budget = self.limits.max_tokens
        chunks: list[tuple[Sequence, list[int]]] = []
        # NOTE: sorted() is stable: among prompts, the earliest admitted goes first.
        for seq in sorted(self.running, key=lambda s: len(s.pending) > 1):
            if budget == 0:
                break
            take = seq.pending[:budget]
            chunks.append((seq, take))
            budget -= len(take)
        return chunks

    def finish(self, seq: Sequence, reason: str) -> None:
        """Take ``seq`` out (finished or aborted) and free its KV pages."""
        seq.status, seq.finish_reason = Status.FINISHED, reason
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self.blocks.release(seq.request_id)
