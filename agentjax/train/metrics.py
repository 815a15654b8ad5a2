"""Training metrics: a JSONL log, TensorBoard event files, and a progress bar with rate and ETA.

On resume the JSONL log is cut back to the resumed step, so a run that was killed and restarted
has exactly the log an uninterrupted run would have; a line that cannot be read (torn by a full disk
or a power loss mid-append) is dropped with a warning. A run in a bucket (gs://) uploads both after each
logged step: the log rewritten whole (util/storage.py), the event files written on local disk first (TensorFlow's
own GCS client would bypass the storage layer agentjax and orbax share).
"""

from __future__ import annotations

import functools
import json
import shutil
import tempfile
from pathlib import Path

import jax
import tensorflow as tf  # TensorBoard's event writer (TF is already the data engine)
from tqdm import tqdm

from agentjax import perf
from agentjax.util.atomic import atomic_write, upload_tree
from agentjax.util.records import read_log
from agentjax.util.storage import AppendFile, as_path, is_url


@functools.cache
def peak_flops() -> float:
    """Peak FLOP/s of the whole job, the denominator of MFU (numerator: perf.train_flops_per_token x tokens/s).

    Accelerators: the published chip peak x devices. CPU: the measured float32 matmul peak of one host x
    hosts; fake CPU devices (--xla_force_host_platform_device_count) share their host's cores, so they
    do not multiply it. Measured once per process (about a second).
    """
    chip = perf.device_peak_flops()
    if chip is not None:
        return chip * jax.device_count()
    return perf.measured_matmul_peak() * jax.process_count()


class MetricsLog:
    """Append one JSON line per logged step; mirror scalars to TensorBoard (`tb/`); drive a progress bar."""

    def __init__(self, run_dir: str | Path, total_steps: int, start_step: int, enabled: bool = True):
        self.enabled = enabled
        run_dir = as_path(run_dir)
        self.path, self._tb_dir = run_dir / "metrics.jsonl", run_dir / "tb"
        if enabled:
            self._truncate_after(start_step)
            self._log = AppendFile(self.path)
            self._tb_local = Path(tempfile.mkdtemp(prefix="agentjax-tb-")) if is_url(run_dir) else self._tb_dir
            self._tb = tf.summary.create_file_writer(str(self._tb_local))
        self.bar = tqdm(total=total_steps, initial=start_step, desc="train", unit="step", disable=not enabled,
                        dynamic_ncols=True)

    def _truncate_after(self, step: int) -> None:
        if not self.path.exists():
            return
        kept = [r for r in read_log(self.path, "step", int) if r["step"] <= step]
        with atomic_write(self.path) as f:
            f.writelines(json.dumps(r) + "\n" for r in kept)

    def write(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        record = {"step": step, **{k: float(v) for k, v in metrics.items()}}
        self._log.write(json.dumps(record) + "\n")
        with self._tb.as_default(step=step):
            for key, value in metrics.items():
                tf.summary.scalar(key, float(value))
        self._tb.flush()
        if self._tb_local != self._tb_dir:
            upload_tree(self._tb_local, self._tb_dir)
        shown = {k: f"{metrics[k]:.4g}" for k in ("loss", "tokens_per_s", "mfu") if k in metrics}
        self.bar.set_postfix(shown, refresh=False)

    def advance(self, n: int = 1) -> None:
        self.bar.update(n)

    def close(self) -> None:
        self.bar.close()
        if self.enabled:
            self._log.close()
            self._tb.close()
            if self._tb_local != self._tb_dir:
                shutil.rmtree(self._tb_local, ignore_errors=True)


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The logged records of a run, in order (unreadable lines reported and left out)."""
    path = as_path(run_dir) / "metrics.jsonl"
    return read_log(path, "step", int) if path.exists() else []
