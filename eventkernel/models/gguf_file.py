"""A minimal GGUF reader: the header, metadata and tensor table, with tensors memory-mapped.

``gguf.GGUFReader`` turns every metadata value, the 49K-token vocabulary included, into
numpy views (seconds on a small model). A config needs a few scalars, so this reader walks
the header once and keeps only the arrays it is asked for (others become their length).
Tensor bytes stay in the file, mapped, until ``tensor_bytes`` hands them to a dequantizer.

Layout (little-endian): ``"GGUF"``, version u32, tensor count u64, metadata count u64; each
metadata entry a string key, a u32 type and a value; each tensor a string name, a u32 dim
count, u64 dims (fastest first), a u32 ggml type and a u64 offset into the data section,
which starts at the next multiple of ``general.alignment`` (32) after the table.
"""
from __future__ import annotations

import math
import mmap
import os
import pathlib
import struct
from dataclasses import dataclass
from typing import Any, Collection, Mapping

import numpy as np

from eventkernel.models.errors import CheckpointError, TruncatedFileError

MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32

# GGUF value type -> struct format of one scalar; 8 is a string, 9 an array.
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
            10: "<Q", 11: "<q", 12: "<d"}
_NUMPY = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "?",
          10: "<u8", 11: "<i8", 12: "<f8"}
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True, slots=True)
class SkippedArray:
    """A metadata array that was not read: its element type and length."""

    value_type: int
    length: int

    def __len__(self) -> int:
        return self.length


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """One tensor of the table: ``shape`` outermost dim first (numpy / torch order)."""

    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int          # absolute, in bytes from the start of the file
    nbytes: int


@dataclass(frozen=True)
class GGUFFile:
    """The parsed header of a GGUF file; tensor bytes are read on demand."""

    path: pathlib.Path
    version: int
    metadata: Mapping[str, Any]
    tensors: tuple[TensorInfo, ...]
    file_size: int

    def tensor_bytes(self, tensor: TensorInfo) -> np.ndarray:
        """The tensor's raw blocks as uint8 ``[*shape[:-1], bytes per row]``, memory-mapped."""
        data = np.memmap(self.path, dtype=np.uint8, mode="r", offset=tensor.offset,
                         shape=(tensor.nbytes,))
        rows = math.prod(tensor.shape[:-1])
        return data.reshape(*tensor.shape[:-1], tensor.nbytes // max(rows, 1))


def read_gguf(path: str | os.PathLike, arrays: Collection[str] = ()) -> GGUFFile:
    """Parse the header of the GGUF file ``path``; read in full only the metadata ``arrays``.

    Raises :class:`CheckpointError` for a file that is not GGUF and
    :class:`TruncatedFileError` for one shorter than its header and tensor table need.
    """
    path = pathlib.Path(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < 24:
            _check_magic(f.read(4), path)
            raise _truncated(path, size, 24, "its fixed header")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            return _Parser(mm, path, size).parse(frozenset(arrays))


def _check_magic(head: bytes, path: pathlib.Path) -> None:
    if head[:4] != MAGIC[:len(head)] or not head:
        raise CheckpointError(
            f"{path} is not a readable GGUF file: it does not start with the bytes 'GGUF'; "
            "pass a .gguf file written by llama.cpp's converter")


def _truncated(path: pathlib.Path, size: int, needed: int, what: str) -> TruncatedFileError:
    return TruncatedFileError(
        f"{path} is cut short: the file has {size:,} bytes but {what} needs at least "
        f"{needed:,}; the download or copy did not finish. Fetch or copy the file again "
        "(and check the disk is not full).")


class _Parser:
    def __init__(self, mm: mmap.mmap, path: pathlib.Path, size: int) -> None:
        self.mm, self.path, self.size, self.pos = mm, path, size, 0

    def parse(self, arrays: frozenset[str]) -> GGUFFile:
        _check_magic(self.take(4), self.path)
        version = self.scalar(4)
        if version not in (2, 3):
            raise CheckpointError(f"{self.path} is not a readable GGUF file: version {version} "
                                  "is not supported (2 or 3 are)")
        tensor_count, kv_count = self.scalar(10), self.scalar(10)
        metadata: dict[str, Any] = {}
        for _ in range(kv_count):
            key = self.string()
            metadata[key] = self.value(self.scalar(4), full=key in arrays)
        table = []
        for _ in range(tensor_count):
            name = self.string()
            dims = [self.scalar(10) for _ in range(self.scalar(4))]
            table.append((name, tuple(reversed(dims)), self.scalar(4), self.scalar(10)))
        alignment = int(metadata.get("general.alignment", DEFAULT_ALIGNMENT))
        data_start = -(-self.pos // alignment) * alignment
        tensors = tuple(TensorInfo(name, shape, ggml_type, data_start + offset,
                                   self.nbytes(name, shape, ggml_type))
                        for name, shape, ggml_type, offset in table)
        end = max((t.offset + t.nbytes for t in tensors), default=self.pos)
        if end > self.size:
            raise _truncated(self.path, self.size, end,
                             f"its tensor table ({tensor_count} tensors)")
        return GGUFFile(self.path, version, metadata, tensors, self.size)

    def take(self, n: int) -> bytes:
        if self.pos + n > self.size:
            raise _truncated(self.path, self.size, self.pos + n,
                             "its header (metadata and tensor table)")
        out = self.mm[self.pos:self.pos + n]
        self.pos += n
        return out

    def scalar(self, value_type: int) -> Any:
        fmt = _SCALARS.get(value_type)
        if fmt is None:
            raise CheckpointError(f"{self.path} is not a readable GGUF file: unknown metadata "
                                  f"type {value_type} at byte {self.pos}")
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        raw = self.take(self.scalar(10))
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise CheckpointError(f"{self.path} is not a readable GGUF file: a string before "
                                  f"byte {self.pos} is not UTF-8") from None

    def value(self, value_type: int, full: bool = True) -> Any:
        if value_type == _STRING:
            return self.string()
        if value_type != _ARRAY:
            return self.scalar(value_type)
        item_type, length = self.scalar(4), self.scalar(10)
        if item_type in _NUMPY:
            width = np.dtype(_NUMPY[item_type]).itemsize
            raw = self.take(width * length)
            return (np.frombuffer(raw, dtype=_NUMPY[item_type]).tolist() if full
                    else SkippedArray(item_type, length))
        if item_type == _STRING and not full:
            for _ in range(length):           # skip: only the lengths are read
                self.skip(self.scalar(10))
            return SkippedArray(item_type, length)
        return [self.value(item_type) for _ in range(length)]

    def skip(self, n: int) -> None:
        if self.pos + n > self.size:
            raise _truncated(self.path, self.size, self.pos + n,
                             "its header (metadata and tensor table)")
        self.pos += n

    def nbytes(self, name: str, shape: tuple[int, ...], ggml_type: int) -> int:
        from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

        try:
            block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
        except (ValueError, KeyError):
            raise CheckpointError(f"{self.path}: tensor {name} has ggml type {ggml_type}, "
                                  "which the gguf package does not know") from None
        count = math.prod(shape)
        if shape and shape[-1] % block:
            raise CheckpointError(f"{self.path}: tensor {name} rows of {shape[-1]} do not "
                                  f"split into blocks of {block}")
        return count // block * type_size
