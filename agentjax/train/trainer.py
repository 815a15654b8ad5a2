"""The training run: build mesh, tokenizer, model and data; train with checkpoints, metrics and resume.

A run directory holds `config.yaml`, its tokenizer file(s), `checkpoints/` (train state + data position),
`metrics.jsonl` and `tb/` (see run_dir.py). Starting a run in a directory that has checkpoints resumes
from the latest one, and the resumed run's losses and final parameters equal an uninterrupted run's.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from agentjax import perf, sharding
from agentjax.data.packing import BATCH_FIELDS
from agentjax.data.pipeline import Pipeline
from agentjax.train.build import build_model, prepare_tokenizer, resolve_model_config, trainable_filter
from agentjax.model.llama import Llama
from agentjax.train.checkpoint import Checkpoints
from agentjax.train.config import RunConfig
from agentjax.train.metrics import MetricsLog, peak_flops
from agentjax.train.program import TrainProgram
from agentjax.train.run_dir import write_run_config
from agentjax.train.validate import validate_run
from agentjax.util.storage import as_path, make_dirs

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The loss or the gradient norm became NaN or inf; the last good checkpoint is kept."""


@dataclass
class RunResult:
    """What a finished (or interrupted) run reports."""

    run_dir: Path
    final_step: int
    last_loss: float | None
    preempted: bool


class Trainer:
    """Owns the compiled step, the state, the data pipelines and the checkpoints of one run."""

    def __init__(self, cfg: RunConfig, run_dir: str | Path | None = None):
        self.cfg = cfg
        self.run_dir = as_path(run_dir or cfg.output_dir)
        sharding.initialize_distributed()
        self.mesh = sharding.make_mesh(cfg.mesh)
        validate_run(cfg, self.mesh)
        make_dirs(self.run_dir)
        self.tokenizer = prepare_tokenizer(cfg, self.run_dir)
        self.model_cfg = resolve_model_config(cfg, self.tokenizer)
        self.checkpoints = Checkpoints(self.run_dir, cfg.train.keep_checkpoints, cfg.train.async_checkpoints)
        resume = self.checkpoints.latest_step()
        # Resuming full fine-tuning restores every weight: build shapes only, never two copies of the model.
        model = build_model(cfg, self.mesh, self.model_cfg, shapes_only=resume is not None and cfg.lora is None)
        self.graphdef, params, frozen = nnx.split(model, trainable_filter(cfg), ...)
        del model
        self.frozen = nnx.to_pure_dict(frozen)
        self.program = TrainProgram(self.graphdef, params, self.frozen, self.mesh, cfg.train, cfg.seed,
                                    dropout=bool(cfg.lora and cfg.lora.dropout))
        self.pipeline = Pipeline(cfg.data, self.tokenizer, cfg.train.global_batch, jax.process_index(),
                                 jax.process_count())
        self.eval_pipeline = None if cfg.eval_data is None else Pipeline(
            cfg.eval_data, self.tokenizer, cfg.train.global_batch, jax.process_index(), jax.process_count())
        if resume is None:
            self.start_step = 0
            self.state = self.program.init(nnx.to_pure_dict(params))
        else:
            self.state, data_state = self.checkpoints.restore(resume, self.program.abstract)
            self.pipeline.restore(data_state)
            self.start_step = resume
            log.info("resumed from step %d in %s", resume, self.checkpoints.directory)
        if jax.process_index() == 0:  # only now: a refused resume must leave the run's record as it was
            write_run_config(cfg, self.run_dir)

    def model(self) -> Llama:
        """The model with the current weights (adapters not merged under LoRA)."""
        return nnx.merge(self.graphdef, self.state.params, self.frozen)

    def global_batch(self, local: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        """One global array per field, from this process's rows."""
        return sharding.host_local_to_global({k: local[k] for k in BATCH_FIELDS}, self.mesh)

    def held_out_loss(self) -> float:
        """Token-weighted loss over the first `eval_batches` batches of `eval_data` (the same batches every time)."""
        start = self.eval_pipeline.state()
        batches = iter(self.eval_pipeline)
        nll = tokens = 0.0
        try:
            for _, local in zip(range(self.cfg.train.eval_batches), batches):
                with sharding.activate(self.mesh):
                    out = self.program.eval_step(self.state.params, self.frozen, self.global_batch(local))
                nll, tokens = nll + float(out["nll_sum"]), tokens + float(out["tokens"])
        finally:
            batches.close()  # one live iterator per pipeline
            self.eval_pipeline.restore(start)
        return nll / tokens

    def run(self) -> RunResult:
        """Train to `train.steps` (or the end of finite data), or until SIGTERM (save, stop), or a non-finite loss
        (stop, keep the last good checkpoint). The loss of step s is read while step s+1 runs."""
        cfg = self.cfg.train
        losses, window = _DeferredLossCheck(self._check), _Throughput(cfg.global_batch * self.cfg.data.seq_len)
        step, stop, self.saved_step = self.start_step, False, self.start_step
        with self._loop_resources() as (batches, metrics_log, preempt):
            while step < cfg.steps and not stop:
                if (local := next(batches, None)) is None:
                    log.warning("the data ended after step %d of %d (data.epochs=%s)", step, cfg.steps, self.cfg.data.epochs)
                    break
                step, metrics = step + 1, self.train_step(local)
                losses.defer(step, metrics)
                window.tick()
                if step % cfg.log_every == 0 or step == cfg.steps:
                    losses.check_pending()
                    metrics_log.write(step, self._log_record(step, metrics, window.rate()))
                metrics_log.advance()
                stop = preempt.any()
                if step % cfg.checkpoint_every == 0 or step == cfg.steps or stop:
                    self._save(step, losses)
            self._save(step, losses, only_if_unsaved=True)  # the data ended between checkpoints
        if stop:
            log.warning("SIGTERM: saved step %d; rerun the same command to resume", step)
        return RunResult(self.run_dir, step, losses.last_loss, stop)

    @contextlib.contextmanager
    def _loop_resources(self):
        """The data iterator, the metrics log and the SIGTERM flag of one `run`, each closed however it ends."""
        with contextlib.ExitStack() as cleanup:
            batches = iter(self.pipeline)
            cleanup.callback(self.checkpoints.close)
            cleanup.callback(batches.close)
            metrics_log = MetricsLog(self.run_dir, self.cfg.train.steps, self.start_step,
                                     enabled=jax.process_index() == 0)
            cleanup.callback(metrics_log.close)
            preempt = _PreemptionFlag()
            cleanup.callback(preempt.restore)
            yield batches, metrics_log, preempt

    def train_step(self, local: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        """One optimizer step on this process's rows of the global batch; returns its metrics (not yet read)."""
        with sharding.activate(self.mesh):
            self.state, metrics = self.program.train_step(self.state, self.frozen, self.global_batch(local))
        return metrics

    def _log_record(self, step: int, metrics, tokens_per_s: float) -> dict[str, float]:
        """The metrics line of `step`: its step metrics, learning rate, throughput, MFU, packing, held-out loss."""
        record = {k: float(v) for k, v in jax.device_get(metrics).items()}
        record.update(learning_rate=float(self.program.schedule(step - 1)), tokens_per_s=tokens_per_s,
                      mfu=tokens_per_s * perf.train_flops_per_token(
                          self.model_cfg, self.cfg.data.seq_len, frozen_base=self.cfg.lora is not None,
                          frozen_layers=self.cfg.train.frozen_layers) / peak_flops(),
                      packing_efficiency=self.pipeline.counters["packing_efficiency"])
        if self.cfg.train.eval_every and step % self.cfg.train.eval_every == 0:
            record["held_out_loss"] = self.held_out_loss()
        return record

    def _save(self, step: int, losses: "_DeferredLossCheck", only_if_unsaved: bool = False) -> None:
        """Checkpoint the state and the data position, after checking the pending loss (never save a bad state)."""
        losses.check_pending()
        if not (only_if_unsaved and self.saved_step == step):
            self.checkpoints.save(self.state, self.pipeline.state())
            self.saved_step = step

    def _check(self, step: int, metrics) -> float:
        """The step's loss, after checking that it and the gradient norm are finite (else stop the run)."""
        loss, grad_norm = float(metrics["loss"]), float(metrics["grad_norm"])
        if not (math.isfinite(loss) and math.isfinite(grad_norm)):
            self.checkpoints.wait()
            raise TrainingDiverged(f"loss {loss}, gradient norm {grad_norm} at step {step}: stopped. "
                                   f"{_kept_checkpoint(self.checkpoints)} Lower train.optimizer.learning_rate, "
                                   "enable train.optimizer.clip_norm, or check the data.")
        return loss


class _DeferredLossCheck:
    """Checks each step's loss one step late, so reading it never stalls the device between steps."""

    def __init__(self, check):
        self.check = check
        self.pending: tuple[int, dict] | None = None
        self.last_loss: float | None = None

    def defer(self, step: int, metrics) -> None:
        """Check the previous step's loss, and hold this one's."""
        self.check_pending()
        self.pending = (step, metrics)

    def check_pending(self) -> float | None:
        """Check the held step's loss now (if any); the latest checked loss."""
        if self.pending is not None:
            self.last_loss, self.pending = self.check(*self.pending), None
        return self.last_loss


class _Throughput:
    """Tokens per second over the steps since the last reading."""

    def __init__(self, tokens_per_step: int):
        self.tokens_per_step = tokens_per_step
        self.start, self.steps = time.perf_counter(), 0

    def tick(self) -> None:
        self.steps += 1

    def rate(self) -> float:
        """The rate since the last reading; starts a new window."""
        now = time.perf_counter()
        rate = self.steps * self.tokens_per_step / (now - self.start)
        self.start, self.steps = now, 0
        return rate


def _kept_checkpoint(checkpoints: Checkpoints) -> str:
    """Which checkpoint a stopped run leaves to resume from, if any."""
    step = checkpoints.latest_step()
    if step is None:
        return "No checkpoint was saved before it."
    return f"The last good checkpoint (step {step}) is kept in {checkpoints.directory}."


class _PreemptionFlag:
    """Set by SIGTERM (TPU preemption); with several hosts, any host's signal stops all of them at the same step."""

    def __init__(self):
        self.flag = False
        self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        self.flag = True

    def any(self) -> bool:
        if jax.process_count() == 1:
            return self.flag
        return bool(multihost_utils.process_allgather(np.array(self.flag)).any())

    def restore(self) -> None:
        signal.signal(signal.SIGTERM, self._previous)


def train(cfg: RunConfig, run_dir: str | Path | None = None) -> RunResult:
    return Trainer(cfg, run_dir).run()
