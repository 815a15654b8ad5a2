"""The tf.data input pipeline: packed rows from the deterministic row stream, batched, each host's share, exact resume.

Every host builds the same global row stream (tokenizing is cheap next to a train step) and keeps its
slice of each global batch, so the position is one small JSON object shared by all hosts. The position
counts rows, not batches: it does not depend on the batch size or the number of hosts.
Restore cost: the plan for the saved window is recomputed from the saved draws (integers only), that
one window (`pack_window` examples) is re-tokenized and re-packed, and its consumed rows are skipped.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from typing import Any, Iterator

import numpy as np
import tensorflow as tf

from agentjax.configlib import to_dict
from agentjax.data.config import DataConfig
from agentjax.util.errors import DataError
from agentjax.data.packing import BATCH_DTYPES, BATCH_FIELDS
from agentjax.data.sources import LoadedSource, source_counts
from agentjax.data.stream import RowStream, Window
from agentjax.data.tokenizer import Tokenizer

STATE_VERSION = 1
# Each tf.data element is one packed window: its rows (`BATCH_FIELDS`, [n, seq_len]), its index, each row's index in
# it, the mixture draws it started from, and what building it counted (JSON). A window may pack to no row at all.
_ELEMENT = BATCH_FIELDS + ("window", "row", "draws", "counts")


class Pipeline:
    """Iterate dicts of numpy arrays `inputs, targets, positions, segment_ids, weights`, each [local_batch, seq_len].

    Iterating again continues from the current position; keep one live iterator at a time. What the position and
    the counters need rides with each window through tf.data, so no tf.data thread writes into this object.
    """

    def __init__(self, config: DataConfig, tokenizer: Tokenizer, global_batch: int, process_index: int = 0, process_count: int = 1):
        if global_batch < 1 or global_batch % process_count:
            raise ValueError(f"global_batch {global_batch} must be a positive multiple of process_count {process_count}")
        if not 0 <= process_index < process_count:
            raise ValueError(f"process_index {process_index} is outside 0..{process_count - 1}")
        self.config, self.tokenizer = config, tokenizer
        self.global_batch, self.local_batch = global_batch, global_batch // process_count
        self.process_index = process_index
        self.stream = RowStream.from_config(config, tokenizer)
        self.sources: list[LoadedSource] = self.stream.sources
        self.template = self.stream.template
        self._fingerprint = self._make_fingerprint()
        self._position: dict[str, Any] = {"window": 0, "row": 0, "draws": self.stream.mixture.start()}
        self._counters: Counter = source_counts(self.sources)

    # -- position --------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """The position after the last batch yielded, plus the counters: small, JSON-serialisable."""
        return {"version": STATE_VERSION, "fingerprint": self._fingerprint, **json.loads(json.dumps(self._position)),
                "counters": dict(self._counters)}

    def restore(self, state: dict[str, Any]) -> None:
        """Resume at `state`: the next batch equals the one an uninterrupted run would have yielded next."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"data state version {state.get('version')!r} is not {STATE_VERSION}")
        if state.get("fingerprint") != self._fingerprint:
            raise ValueError("data state was saved with a different data config, data or tokenizer; "
                             "resuming would not reproduce the same batches")
        self._position = {"window": int(state["window"]), "row": int(state["row"]), "draws": [int(d) for d in state["draws"]]}
        self._counters = Counter(state["counters"])

    @property
    def counters(self) -> dict[str, int | float]:
        """Counts so far: loading (conversations, bad input by reason), packed windows (examples, tokens,
        dropped/truncated by reason, per source), and yielded batches (`consumed_*`, `packing_efficiency`)."""
        out: dict[str, int | float] = dict(self._counters)
        slots = out.get("consumed_slots", 0)
        out["packing_efficiency"] = out.get("consumed_tokens", 0) / slots if slots else 0.0
        return out

    # -- iteration -------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        start = dict(self._position)
        counted_from = start["window"] + (1 if start["row"] > 0 else 0)  # a resumed window was counted already
        parts, rows, counts = [], 0, Counter()  # (window, first, end) slices of the batch being filled, and their counts
        for window in self._windows(start):
            if window["window"] >= counted_from:
                counts.update(json.loads(window["counts"]))
            first, n = 0, len(window["row"])
            while first < n:
                end = min(n, first + self.global_batch - rows)
                parts.append((window, first, end))
                rows, first = rows + end - first, end
                if rows == self.global_batch:
                    yield self._take(parts, counts)  # counts join the state as their batch is yielded
                    parts, rows, counts = [], 0, Counter()
        self._counters.update(counts)
        if parts:
            yield self._take(parts, Counter())

    def _take(self, parts: list[tuple[dict[str, np.ndarray], int, int]], counts: Counter) -> dict[str, np.ndarray]:
        """Join a global batch from window slices, check it, advance the position and counters past it, and return
        this host's share."""
        batch = {k: np.concatenate([w[k][first:end] for w, first, end in parts]) for k in BATCH_FIELDS}
        if len(batch["inputs"]) < self.global_batch:
            batch = _pad_rows(batch, self.global_batch, self.tokenizer.pad_id)
        supervised = float(batch["weights"].sum())
        if supervised == 0:
            raise DataError("", "no_supervised_tokens", f"the batch after window {self._position['window']} row "
                            f"{self._position['row']} has no supervised token; refusing to train on nothing")
        last, _, end = parts[-1]
        self._position = {"window": int(last["window"]), "row": int(last["row"][end - 1]) + 1,
                          "draws": [int(d) for d in last["draws"]]}
        self._counters.update(counts)
        self._counters.update({"batches": 1, "consumed_tokens": int((batch["segment_ids"] > 0).sum()),
                               "consumed_slots": batch["segment_ids"].size, "consumed_supervised": int(supervised)})
        lo = self.process_index * self.local_batch
        return {k: v[lo : lo + self.local_batch] for k, v in batch.items()}

    def _windows(self, start: dict[str, Any]) -> Iterator[dict[str, np.ndarray]]:
        """The packed windows from `start` on, in order: plan (generator) -> tokenize and pack in parallel -> prefetch.
        An error in a tf.data thread is re-raised here with its message intact."""
        seq_len, n_sources = self.config.seq_len, len(self.sources)
        first_window, skip_rows = start["window"], start["row"]
        errors: list[Exception] = []

        def plan():
            for window in self.stream.windows(first_window, tuple(start["draws"])):
                yield window.index, window.draws, window.items

        def build(index, draws, items):
            index, draws = int(index), draws.numpy()
            try:
                rows, counts = self.stream.build(Window(index, tuple(int(d) for d in draws), items.numpy()))
            except Exception as e:
                errors.append(e)
                raise
            skip = skip_rows if index == first_window else 0
            kept = np.arange(skip, max(len(rows["inputs"]), skip), dtype=np.int64)
            return [rows[k][skip:] for k in BATCH_FIELDS] + [np.int64(index), kept, draws, json.dumps(counts)]

        def to_window(index, draws, items):
            out = tf.py_function(build, [index, draws, items], [tf.as_dtype(BATCH_DTYPES[k]) for k in BATCH_FIELDS]
                                 + [tf.int64, tf.int64, tf.int64, tf.string])
            for t, shape in zip(out, [[None, seq_len]] * len(BATCH_FIELDS) + [[], [None], [n_sources], []]):
                t.set_shape(shape)
            return dict(zip(_ELEMENT, out))

        ds = tf.data.Dataset.from_generator(plan, output_signature=(
            tf.TensorSpec((), tf.int64), tf.TensorSpec((n_sources,), tf.int64), tf.TensorSpec((None, 2), tf.int64)))
        ds = ds.map(to_window, num_parallel_calls=self.config.parallel_windows, deterministic=True)
        windows = ds.prefetch(self.config.prefetch_batches).as_numpy_iterator()
        while True:
            try:
                yield next(windows)
            except StopIteration:
                return
            except tf.errors.OpError:
                if errors:
                    raise errors[0] from None
                raise

    def _make_fingerprint(self) -> str:
        """Hash of everything that decides the row stream (not batch size, hosts, or tf.data parallelism)."""
        cfg = to_dict(self.config)
        for key in ("parallel_windows", "prefetch_batches"):
            cfg.pop(key)
        tok = self.tokenizer
        probe = tok.encode("agentjax fingerprint: Thought/Action/Observation 0123456789 \u00e9")
        blob = json.dumps([cfg, [len(s.conversations) for s in self.sources], tok.vocab_size, tok.bos_id, tok.eos_id, tok.pad_id, probe],
                          sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _pad_rows(batch: dict[str, np.ndarray], rows: int, pad_id: int) -> dict[str, np.ndarray]:
    """Fill a short final batch with empty rows (segment 0, weight 0) so shapes stay fixed and nothing is dropped."""
    out = {}
    for k, v in batch.items():
        fill = np.full((rows - len(v),) + v.shape[1:], pad_id if k in ("inputs", "targets") else 0, v.dtype)
        out[k] = np.concatenate([v, fill])
    return out
