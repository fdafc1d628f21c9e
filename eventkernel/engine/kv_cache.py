"""Paged KV-cache accounting: which pages each sequence owns."""
from __future__ import annotations

import math


class OutOfPages(RuntimeError):
    """The KV cache has no free page left for a sequence."""


class BlockManager:
    """Free-list allocator of KV-cache pages; pages are shared by every layer."""

    def __init__(self, num_pages: int, page_size: int, pages_per_seq: int) -> None:
        self.page_size = page_size
        self.pages_per_seq = pages_per_seq
        self.free: list[int] = list(range(num_pages - 1, -1, -1))
        self.tables: dict[int, list[int]] = {}

    def can_allocate(self, seq_id: int, length: int) -> bool:
        need = math.ceil(length / self.page_size) - len(self.tables.get(seq_id, []))
        return need <= len(self.free) and math.ceil(length / self.page_size) <= self.pages_per_seq

    def allocate(self, seq_id: int, length: int) -> list[int]:
        """Grow ``seq_id``'s page table to hold ``length`` tokens."""
        if math.ceil(length / self.page_size) > self.pages_per_seq:
            raise OutOfPages(f"sequence {seq_id} needs {length} tokens of context, more than "
                             f"max_context ({self.pages_per_seq * self.page_size})")
        table = self.tables.setdefault(seq_id, [])
        while len(table) * self.page_size < length:
            if not self.free:
                raise OutOfPages("the KV cache is full: lower the batch or raise num_pages")
            table.append(self.free.pop())
        return table

    def release(self, seq_id: int) -> None:
        self.free.extend(reversed(self.tables.pop(seq_id, [])))

    def slot(self, seq_id: int, position: int) -> int:
        table = self.tables[seq_id]
        return table[position // self.page_size] * self.page_size + position % self.page_size
