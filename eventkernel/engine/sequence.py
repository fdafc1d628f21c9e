"""One request inside the engine: its tokens, its sampling parameters and where it stands."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

import torch

from eventkernel.engine.sampling import SamplingParams


class Status(enum.Enum):
    WAITING = "waiting"        # added, holds no KV pages yet
    RUNNING = "running"        # admitted: scheduled each step until it finishes
    FINISHED = "finished"


@dataclass(slots=True, eq=False)
class Sequence:
    """A request: prompt + generated tokens, how many of them the KV cache holds, and its
    sampling state (the generator is None for greedy requests)."""

    request_id: int
    tokens: list[int]                  # prompt + generated so far (fed back to the model)
    num_prompt_tokens: int
    params: SamplingParams
    generator: torch.Generator | None = None
    num_cached: int = 0                # tokens whose K/V are in the cache
    output_ids: list[int] = field(default_factory=list)   # generated, without a final EOS
    status: Status = Status.WAITING
    finish_reason: str | None = None   # "stop" | "length" | "abort"
    text: str = ""                     # decoded output (kept up to date only with stop strings)

    @property
    def pending(self) -> list[int]:
        """Tokens not yet in the KV cache: the prompt's rest, or the last sampled token."""
        return self.tokens[self.num_cached:]

    @property
    def in_prompt(self) -> bool:
        return self.num_cached < self.num_prompt_tokens
