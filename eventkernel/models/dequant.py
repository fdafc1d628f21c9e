"""Dequantization of the common GGUF block formats (vectorized numpy, a few passes each).

gguf-py's dequantizers take seconds on a small model; these give the same fp32 values
(the same float operations in the same order) in a fraction of that. Formats not listed
here go through ``gguf.quants.dequantize``. Block layouts (32 weights a block):

- ``Q4_0``: f16 scale ``d``, 16 bytes of 4-bit ``q`` (low nibbles: weights 0-15, high:
  16-31); ``w = d * (q - 8)``.
- ``Q4_1``: f16 ``d``, f16 minimum ``m``, 16 bytes as Q4_0; ``w = d * q + m``.
- ``Q8_0``: f16 ``d``, 32 int8 ``q``; ``w = q * d``.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

# ggml type ids (gguf.GGMLQuantizationType)
F32, F16, Q4_0, Q4_1, Q8_0, BF16 = 0, 1, 2, 3, 8, 30


def _f16(blocks: np.ndarray, index: int) -> np.ndarray:
    """The ``index``-th f16 of each block, as fp32 [n_blocks, 1]."""
    return blocks.view(np.float16)[:, index:index + 1].astype(np.float32)


def _nibbles(packed: np.ndarray) -> np.ndarray:
    """[n_blocks, 16] bytes -> [n_blocks, 32] 4-bit values as fp32 (low nibbles first)."""
    return np.concatenate((packed & 0x0F, packed >> 4), axis=1).astype(np.float32)


def _q4_0(blocks: np.ndarray) -> np.ndarray:
    # NOTE: gguf-py subtracts 8 in int8 before the product; exact either way.
    return _f16(blocks, 0) * (_nibbles(blocks[:, 2:]) - np.float32(8))


def _q4_1(blocks: np.ndarray) -> np.ndarray:
    return _f16(blocks, 0) * _nibbles(blocks[:, 4:]) + _f16(blocks, 1)


def _q8_0(blocks: np.ndarray) -> np.ndarray:
    return blocks[:, 2:].view(np.int8).astype(np.float32) * _f16(blocks, 0)


# ggml type -> (bytes per block of 32, dequantizer of [n_blocks, bytes] uint8 blocks)
_BLOCKS: dict[int, tuple[int, Callable[[np.ndarray], np.ndarray]]] = {
    Q4_0: (18, _q4_0), Q4_1: (20, _q4_1), Q8_0: (34, _q8_0),
}
_PLAIN = {F32: np.float32, F16: np.float16}
FAST_TYPES = frozenset(_BLOCKS) | frozenset(_PLAIN) | {BF16}


def dequantize(raw: np.ndarray, ggml_type: int, shape: tuple[int, ...]) -> torch.Tensor:
    """fp32 weights ``shape`` from a tensor's raw bytes (uint8, any shape), a new tensor."""
    data = np.ascontiguousarray(raw).reshape(-1)
    if ggml_type in _PLAIN:
        array = data.view(_PLAIN[ggml_type]).astype(np.float32)      # a copy
    elif ggml_type == BF16:
        array = (data.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    elif ggml_type in _BLOCKS:
        block_bytes, blocks_to_fp32 = _BLOCKS[ggml_type]
        array = blocks_to_fp32(data.reshape(-1, block_bytes))
    else:
        import gguf

        array = np.array(gguf.quants.dequantize(raw, ggml_type), dtype=np.float32)
    return torch.from_numpy(array.reshape(shape))
