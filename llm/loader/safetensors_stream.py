"""Read safetensors files one tensor at a time, with host memory bounded by that tensor.

A ``.safetensors`` file is an 8-byte little-endian header length, a JSON header (name ->
dtype, shape, byte offsets) and the raw bytes. ``ShardReader`` reads the header once and
each tensor's bytes with one ``readinto`` into a buffer of exactly its size, which the
caller moves to the device and drops. Unlike a memory map kept open for the whole shard,
pages of tensors already moved never stay resident in this process, so the host's peak
is the largest tensor (plus the page cache, which the kernel may reclaim), not the shard.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch

DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


class SafetensorsFormatError(ValueError):
    """The file is not a readable safetensors file; the message names it."""


class ShardReader:
    """The tensors of one safetensors file, read on demand."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            with self.path.open("rb") as handle:
                (length,) = struct.unpack("<Q", handle.read(8))
                header = json.loads(handle.read(length))
        except (OSError, struct.error, ValueError) as exc:
            raise SafetensorsFormatError(f"{self.path} is not a safetensors file: {exc}") from exc
        header.pop("__metadata__", None)
        self._data_start = 8 + length
        self.entries: dict[str, dict] = header

    def keys(self) -> list[str]:
        return list(self.entries)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.entries[name]["shape"])

    def dtype(self, name: str) -> torch.dtype:
        code = self.entries[name]["dtype"]
        if code not in DTYPES:
            raise SafetensorsFormatError(f"{name} in {self.path.name} has unsupported dtype {code}")
        return DTYPES[code]

    def read(self, name: str) -> torch.Tensor:
        """The tensor ``name`` as a CPU tensor over a buffer of its exact size."""
        return self.read_rows(name, 0, self.shape(name)[0] if self.shape(name) else 1)

    def read_rows(self, name: str, first: int, count: int) -> torch.Tensor:
        """Rows ``first .. first + count - 1`` of ``name``'s leading dimension, reading only their bytes.

        A tensor-parallel rank reads its experts (or heads) this way, never the whole tensor.
        """
        entry = self.entries[name]
        shape = self.shape(name)
        start, end = entry["data_offsets"]
        if shape:
            row_bytes = (end - start) // shape[0] if shape[0] else 0
            start, end = start + first * row_bytes, start + (first + count) * row_bytes
            shape = (count, *shape[1:])
        buffer = bytearray(end - start)
        with self.path.open("rb") as handle:
            handle.seek(self._data_start + start)
            if handle.readinto(buffer) != len(buffer):
                raise SafetensorsFormatError(f"{self.path.name} is truncated inside {name}")
        dtype = self.dtype(name)
        if not buffer:
            return torch.empty(shape, dtype=dtype)
        return torch.frombuffer(buffer, dtype=dtype).reshape(shape)
