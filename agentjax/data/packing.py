"""Pack variable-length examples into fixed rows (best fit) and lay them out as inputs/targets/positions/segments/weights."""

from __future__ import annotations

import bisect
from typing import Sequence

import numpy as np

# The batch contract shared by packing, the tf.data pipeline and the train step: field -> dtype.
BATCH_DTYPES = {"inputs": np.int32, "targets": np.int32, "positions": np.int32, "segment_ids": np.int32,
                "weights": np.float32}
BATCH_FIELDS = tuple(BATCH_DTYPES)


def best_fit_pack(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Best-fit decreasing: longest first, each into the open row with the least room that still fits it.

    Returns rows as lists of example indices; deterministic (ties keep input order). Lengths must be <= capacity.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    rows: list[list[int]] = []
    room: list[tuple[int, int]] = []  # sorted (free slots, row index)
    for i in order:
        n = lengths[i]
        if not 0 < n <= capacity:
            raise ValueError(f"example {i} has length {n}, outside 1..{capacity}")
        at = bisect.bisect_left(room, (n, -1))
        if at == len(room):
            rows.append([i])
            free, row = capacity - n, len(rows) - 1
        else:
            free, row = room.pop(at)
            rows[row].append(i)
            free -= n
        bisect.insort(room, (free, row))
    return rows


def layout_rows(examples: Sequence[tuple[np.ndarray, np.ndarray]], rows: list[list[int]], seq_len: int, pad_id: int) -> dict[str, np.ndarray]:
    """Arrays [len(rows), seq_len] for packed rows of `(ids, weights)` examples.

    An example of n tokens takes n-1 slots: inputs ids[:-1], targets ids[1:], weights weights[1:];
    positions restart at 0 and segment ids count 1, 2, ... per row; padding has segment 0 and weight 0.
    """
    r = len(rows)
    fill = {"inputs": pad_id, "targets": pad_id}
    out = {k: np.full((r, seq_len), fill.get(k, 0), dtype) for k, dtype in BATCH_DTYPES.items()}
    for j, row in enumerate(rows):
        offset = 0
        for segment, i in enumerate(row, 1):
            ids, weights = examples[i]
            n = len(ids) - 1
            if offset + n > seq_len:
                raise ValueError(f"row {j} overflows: {offset + n} slots > seq_len {seq_len}")
            span = slice(offset, offset + n)
            out["inputs"][j, span] = ids[:-1]
            out["targets"][j, span] = ids[1:]
            out["weights"][j, span] = weights[1:]
            out["positions"][j, span] = np.arange(n)
            out["segment_ids"][j, span] = segment
            offset += n
    return out
