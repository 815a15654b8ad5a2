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
import threading
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
_ROW_DTYPES = [tf.as_dtype(BATCH_DTYPES[k]) for k in BATCH_FIELDS] + [tf.int64, tf.int64]  # + window, row


class Pipeline:
    """Iterate dicts of numpy arrays `inputs, targets, positions, segment_ids, weights`, each [local_batch, seq_len].

    Iterating again continues from the current position; keep one live iterator at a time.
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
        self._window_draws: dict[int, tuple[int, ...]] = {}  # filled by the planner thread, read by the consumer
        self._window_counts: dict[int, Counter] = {}  # filled by the packing threads, merged when consumed
        self._lock = threading.Lock()
        self._error: Exception | None = None  # set by a tf.data thread, raised by the consumer
        self._uncounted_from = 0

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
        self._error = None
        self._uncounted_from = start["window"] + (1 if start["row"] > 0 else 0)  # a resumed window was counted already
        batches = self._dataset(start).as_numpy_iterator()
        while True:
            try:
                element = next(batches)
            except StopIteration:
                self._merge_counts(None)
                return
            except tf.errors.OpError:
                if self._error is not None:  # re-raise what went wrong in a tf.data thread, message intact
                    raise self._error from None
                raise
            yield self._take(element)

    def _take(self, element: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Check a global batch, advance the position and counters past it, and return this host's share."""
        batch = {k: element[k] for k in BATCH_FIELDS}
        if len(element["window"]) < self.global_batch:
            batch = _pad_rows(batch, self.global_batch, self.tokenizer.pad_id)
        supervised = float(batch["weights"].sum())
        if supervised == 0:
            raise DataError("", "no_supervised_tokens", f"the batch after window {self._position['window']} row "
                            f"{self._position['row']} has no supervised token; refusing to train on nothing")
        last_window, last_row = int(element["window"][-1]), int(element["row"][-1])
        self._merge_counts(last_window)
        with self._lock:
            draws = self._window_draws[last_window]
            for w in [w for w in self._window_draws if w < last_window]:
                del self._window_draws[w]
        self._position = {"window": last_window, "row": last_row + 1, "draws": list(draws)}
        self._counters.update({"batches": 1, "consumed_tokens": int((batch["segment_ids"] > 0).sum()),
                               "consumed_slots": batch["segment_ids"].size, "consumed_supervised": int(supervised)})
        lo = self.process_index * self.local_batch
        return {k: v[lo : lo + self.local_batch] for k, v in batch.items()}

    def _merge_counts(self, upto: int | None) -> None:
        """Add the counts of windows up to `upto` (all when None) once their rows are consumed; each window once."""
        with self._lock:
            for w in sorted(self._window_counts):
                if upto is not None and w > upto:
                    break
                counts = self._window_counts.pop(w)
                if w >= self._uncounted_from:
                    self._counters.update(counts)

    def _dataset(self, start: dict[str, Any]) -> tf.data.Dataset:
        """plan windows (generator) -> tokenize and pack them in parallel, in order -> rows -> global batches -> prefetch."""
        seq_len = self.config.seq_len
        first_window, skip_rows = start["window"], start["row"]

        def plan():
            for window in self.stream.windows(first_window, tuple(start["draws"])):
                with self._lock:
                    self._window_draws[window.index] = window.draws
                yield window.index, window.draws, window.items

        def build(index, draws, items):
            index = int(index)
            try:
                rows, counts = self.stream.build(Window(index, tuple(int(d) for d in draws), items.numpy()))
            except Exception as e:
                self._error = e
                raise
            with self._lock:
                self._window_counts[index] = counts
            skip = skip_rows if index == first_window else 0
            n = len(rows["inputs"])
            return [rows[k][skip:] for k in BATCH_FIELDS] + [np.full(n - min(skip, n), index, np.int64), np.arange(skip, max(n, skip), dtype=np.int64)]

        def to_rows(index, draws, items):
            out = tf.py_function(build, [index, draws, items], _ROW_DTYPES)
            for t in out[: len(BATCH_FIELDS)]:
                t.set_shape([None, seq_len])
            for t in out[len(BATCH_FIELDS) :]:
                t.set_shape([None])
            return dict(zip(BATCH_FIELDS + ("window", "row"), out))

        n_sources = len(self.sources)
        ds = tf.data.Dataset.from_generator(plan, output_signature=(
            tf.TensorSpec((), tf.int64), tf.TensorSpec((n_sources,), tf.int64), tf.TensorSpec((None, 2), tf.int64)))
        ds = ds.map(to_rows, num_parallel_calls=self.config.parallel_windows, deterministic=True)
        ds = ds.unbatch().batch(self.global_batch)
        return ds.prefetch(self.config.prefetch_batches)

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
