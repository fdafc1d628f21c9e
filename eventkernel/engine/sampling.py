"""Per-request sampling parameters and the sampler that turns logits into token ids.

Each request owns a `torch.Generator` seeded from its `seed`, and every random number a
request consumes comes from its own generator, row by row, so its samples do not depend on
which other requests share the batch.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import torch

_MAX_SEED = 2**64


@dataclasses.dataclass(frozen=True, slots=True)
class SamplingParams:
    """How one request picks its tokens.

    temperature 0 is greedy (argmax, first index on ties); top_k 0 keeps every token;
    top_p keeps the smallest set of most likely tokens whose probability reaches top_p.
    `stop` strings end generation when they appear in the output text (a single string is
    accepted and stored as a one-item tuple).
    """

    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str, ...] | None = None
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        if not _is_int(self.max_tokens) or self.max_tokens < 1:
            raise ValueError(f"max_tokens must be an integer >= 1, got {self.max_tokens!r}")
        if not _is_number(self.temperature) or not self.temperature >= 0:
            raise ValueError(
                f"temperature must be a finite number >= 0 (0 = greedy), got {self.temperature!r}"
            )
        if not _is_number(self.top_p) or not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if not _is_int(self.top_k) or self.top_k < 0:
            raise ValueError(f"top_k must be an integer >= 0 (0 = off), got {self.top_k!r}")
        if self.seed is not None and (not _is_int(self.seed) or not 0 <= self.seed < _MAX_SEED):
            raise ValueError(f"seed must be an integer in [0, 2**64) or None, got {self.seed!r}")
        if not isinstance(self.ignore_eos, bool):
            raise ValueError(f"ignore_eos must be true or false, got {self.ignore_eos!r}")
        if self.stop is not None:
            stop = (self.stop,) if isinstance(self.stop, str) else self.stop
            if not isinstance(stop, (list, tuple)) or not all(
                isinstance(s, str) and s for s in stop
            ):
                raise ValueError(f"stop must be a list of non-empty strings, got {self.stop!r}")
            object.__setattr__(self, "stop", tuple(stop) or None)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return _is_int(value) or (isinstance(value, float) and math.isfinite(value))


def make_generator(params: SamplingParams, device: torch.device | str = "cpu") -> torch.Generator:
    """The generator for one request: seeded with `params.seed`, or randomly when None."""
    generator = torch.Generator(device=device)
    if params.seed is None:
        generator.seed()
    else:
        generator.manual_seed(params.seed)
    return generator


class Sampler:
    """Picks one token id per sequence from logits.

    Filtering (temperature, top-k, top-p) is batched; the random draw is per row from that
    row's generator (an exponential race: argmax of p / E with E ~ Exp(1), which picks
    index i with probability p_i).
    """

    def sample(
        self,
        logits: torch.Tensor,
        params: Sequence[SamplingParams],
        generators: Sequence[torch.Generator | None],
    ) -> torch.Tensor:
        """logits: [num_seqs, vocab] float32 -> token ids: [num_seqs] int64.

        `generators[i]` may be None only for greedy rows.
        """
        if logits.dim() != 2 or logits.shape[0] != len(params) or len(params) != len(generators):
            raise ValueError(
                f"expected logits [num_seqs, vocab] with one SamplingParams and one generator "
                f"per row; got logits {tuple(logits.shape)}, {len(params)} params, "
                f"{len(generators)} generators"
            )
        logits = logits.float()
        tokens = logits.argmax(dim=-1)
        sampled_rows = [row for row, p in enumerate(params) if not p.greedy]
        if not sampled_rows:
            return tokens

        rows = torch.tensor(sampled_rows, device=logits.device)
        row_params = [params[row] for row in sampled_rows]
        temperature = torch.tensor([p.temperature for p in row_params], device=logits.device)
        # NOTE: a stable sort keeps the lower index first among equal logits, so top_k=1
        # and a tiny top_p pick the same token as greedy.
        sorted_logits, sorted_ids = torch.sort(
            logits[rows] / temperature[:, None], dim=-1, descending=True, stable=True
        )
        # sorted_logits, sorted_ids: [num_sampled, vocab]
        vocab = logits.shape[1]
        rank = torch.arange(vocab, device=logits.device)
        top_k = torch.tensor([p.top_k or vocab for p in row_params], device=logits.device)
        sorted_logits = sorted_logits.masked_fill(rank[None, :] >= top_k[:, None], -math.inf)
        probs = sorted_logits.softmax(dim=-1)
        top_p = torch.tensor([p.top_p for p in row_params], device=logits.device)
        # NOTE: a token is dropped when the more likely ones already reach top_p, so the
        # most likely token always stays; top_p == 1 drops nothing (cumsum may round to 1).
        mass_before = probs.cumsum(dim=-1) - probs
        drop = (mass_before >= top_p[:, None]) & (top_p[:, None] < 1)
        probs = probs.masked_fill(drop, 0.0)

        for i, row in enumerate(sampled_rows):
            generator = generators[row]
            if generator is None:
                raise ValueError(f"row {row} samples (temperature > 0) but has no generator")
            noise = torch.empty(vocab, device=logits.device).exponential_(generator=generator)
            noise.clamp_min_(torch.finfo(noise.dtype).tiny)
            tokens[row] = sorted_ids[i, (probs[i] / noise).argmax()]
        return tokens

    __call__ = sample


def find_stop(text: str, stop: Sequence[str] | None) -> int | None:
    """Index where `text` must be cut for the earliest stop string in it, or None."""
    if not stop:
        return None
    hits = [index for index in (text.find(s) for s in stop) if index >= 0]
    return min(hits) if hits else None


def partial_stop_length(text: str, stop: Sequence[str] | None) -> int:
    """Length of the longest suffix of `text` that begins some stop string.

    A streaming server holds those characters back until the next tokens show whether a
    stop string completes.
    """
    longest = 0
    for s in stop or ():
        for length in range(min(len(s) - 1, len(text)), longest, -1):
            if text.endswith(s[:length]):
                longest = length
                break
    return longest
