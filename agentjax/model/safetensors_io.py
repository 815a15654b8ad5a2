"""Streaming safetensors: memory-mapped reads and tensor-by-tensor writes, bfloat16 included.

The format is a little-endian u64 header size, a JSON header (name -> dtype, shape, byte offsets),
then the raw bytes. Opening a file has the `safetensors` library validate it (header size, JSON,
every tensor's offsets inside the file, byte length = dtype size x shape), so a corrupt file is a
DataError naming it before any tensor is read. Reading maps the file, so a tensor is only paged in
when it is used; writing appends one tensor at a time, so a shard never has to be assembled in memory.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Callable, Iterable

import ml_dtypes
import numpy as np
from safetensors import SafetensorError, safe_open

from agentjax.util.errors import DataError

DTYPES = {
    "F64": np.dtype(np.float64), "F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16), "I64": np.dtype(np.int64), "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16), "I8": np.dtype(np.int8), "U8": np.dtype(np.uint8), "BOOL": np.dtype(np.bool_),
}
_NAMES = {v: k for k, v in DTYPES.items()}
FLOAT_DTYPES = frozenset({"F64", "F32", "F16", "BF16"})


class SafetensorsFile:
    """Read-only view of one .safetensors file; `get(name)` returns a memory-mapped array."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            with safe_open(self.path, framework="numpy"):
                pass
        except SafetensorError as e:
            raise DataError(str(self.path), "corrupt_safetensors", f"not a valid safetensors file: {e}") from None
        with open(self.path, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(size))
        self.metadata = header.pop("__metadata__", {}) or {}
        self.entries = header
        self._data_start = 8 + size
        self._map = np.memmap(self.path, dtype=np.uint8, mode="r")

    def keys(self) -> list[str]:
        return list(self.entries)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.entries[name]["shape"])

    def dtype(self, name: str) -> str:
        """The tensor's declared safetensors dtype, e.g. `BF16`."""
        return self.entries[name]["dtype"]

    def get(self, name: str) -> np.ndarray:
        entry = self.entries[name]
        if entry["dtype"] not in DTYPES:
            raise ValueError(f"{self.path}: tensor {name}: unsupported dtype {entry['dtype']}")
        begin, end = entry["data_offsets"]
        raw = self._map[self._data_start + begin: self._data_start + end]
        return raw.view(DTYPES[entry["dtype"]]).reshape(entry["shape"])


def write_safetensors(path: str | Path, tensors: Iterable[tuple[str, tuple[int, ...], np.dtype, Callable[[], np.ndarray]]],
                      metadata: dict[str, str] | None = None) -> None:
    """Write tensors given as (name, shape, dtype, producer); each producer is called once, in order."""
    tensors = list(tensors)
    header: dict = {"__metadata__": metadata or {}}
    offset = 0
    for name, shape, dtype, _ in tensors:
        nbytes = math.prod(shape) * np.dtype(dtype).itemsize
        header[name] = {"dtype": _NAMES[np.dtype(dtype)], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name, shape, dtype, produce in tensors:
            array = np.ascontiguousarray(produce(), dtype=dtype)
            if array.shape != tuple(shape):
                raise ValueError(f"{path}: tensor {name}: produced shape {array.shape}, declared {tuple(shape)}")
            f.write(array.tobytes())
