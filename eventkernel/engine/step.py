"""A step's inputs: the tokens it carries and where each sequence's context lives."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from eventkernel.engine.kv_cache import BlockManager


@dataclass(frozen=True)
class StepInputs:
    """Host-side step description, written into the program's input buffers."""

    tokens: list[int]
    positions: list[int]
    slot_mapping: list[int]
    query_start: list[int]          # [S + 1]
    context_lens: list[int]         # [S]
    block_tables: list[list[int]]   # [S][pages]
    logits_indices: list[int]       # [S]

    @property
    def num_tokens(self) -> int:
        return len(self.tokens)

    @property
    def num_seqs(self) -> int:
        return len(self.context_lens)

    def write(self, buffers: dict[str, torch.Tensor]) -> None:
        for name, values in (("tokens", self.tokens), ("positions", self.positions),
                             ("slot_mapping", self.slot_mapping),
                             ("query_start", self.query_start),
                             ("context_lens", self.context_lens),
                             ("logits_indices", self.logits_indices)):
            buffers[name][:len(values)] = torch.tensor(values, dtype=torch.int32)
        table = buffers["block_table"]
        table[:self.num_seqs].fill_(0)
        for i, row in enumerate(self.block_tables):
            table[i, :len(row)] = torch.tensor(row, dtype=torch.int32)


def build_step(chunks: list[tuple[int, int, list[int]]], blocks: BlockManager) -> StepInputs:
    """``chunks``: per sequence (seq_id, tokens already in its cache, new tokens)."""
    tokens, positions, slots, starts, lens, tables, last = [], [], [], [0], [], [], []
    for seq_id, cached, new in chunks:
        if not new:
            raise ValueError(f"sequence {seq_id} brings no token to the step")
        blocks.allocate(seq_id, cached + len(new))
        for i, tok in enumerate(new):
            tokens.append(int(tok))
            positions.append(cached + i)
            slots.append(blocks.slot(seq_id, cached + i))
        starts.append(len(tokens))
        lens.append(cached + len(new))
        tables.append(list(blocks.tables[seq_id]))
        last.append(len(tokens) - 1)
    return StepInputs(tokens, positions, slots, starts, lens, tables, last)
