"""The training run: build mesh, tokenizer, model and data; train with checkpoints, metrics and resume.

A run directory holds `config.yaml`, `tokenizer.model`, `checkpoints/` (train state + data position),
`metrics.jsonl` and `tb/`. Starting a run in a directory that has checkpoints resumes from the
latest one, and the resumed run's losses and final parameters equal an uninterrupted run's.
"""

from __future__ import annotations

import logging
import math
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import yaml
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec

from agentjax import perf, sharding
from agentjax.configlib import ConfigError, to_dict
from agentjax.data.errors import BadInputPolicy
from agentjax.data.formats import read_conversations
from agentjax.data.tokenizer import Tokenizer, load_tokenizer, train_sentencepiece
from agentjax.model.checkpoint import abstract_model, restore_params
from agentjax.model.llama import Llama, LlamaConfig
from agentjax.model.lora import LoRAParam, add_lora
from agentjax.train.checkpoint import Checkpoints
from agentjax.train.config import RunConfig
from agentjax.train.metrics import MetricsLog
from agentjax.train.optim import decay_mask, learning_rate_schedule, make_optimizer
from agentjax.train.step import BATCH_FIELDS, TrainState, make_eval_step, make_train_step

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or inf; the last good checkpoint is kept."""


# -- set-up -----------------------------------------------------------------------------------


def validate_run(cfg: RunConfig, mesh, model_cfg: LlamaConfig) -> None:
    """Check what only makes sense together (mesh vs batch, lengths), with messages that say what to change."""
    batch_ways = mesh.shape["data"] * mesh.shape["fsdp"]
    if cfg.train.global_batch % (batch_ways * cfg.train.micro_batches):
        raise ConfigError(
            f"train.global_batch ({cfg.train.global_batch}) must be divisible by mesh data*fsdp ({batch_ways}) "
            f"x train.micro_batches ({cfg.train.micro_batches}) so every device gets whole rows")
    if cfg.train.global_batch % jax.process_count():
        raise ConfigError(f"train.global_batch must be divisible by the {jax.process_count()} processes")
    if cfg.data.seq_len > model_cfg.max_seq_len:
        raise ConfigError(f"data.seq_len ({cfg.data.seq_len}) exceeds the model's max_seq_len "
                          f"({model_cfg.max_seq_len}); lower it or set model.overrides.max_seq_len")


def prepare_tokenizer(cfg: RunConfig, run_dir: Path) -> Tokenizer:
    """The run's tokenizer: the configured file, or one trained on the training data (saved in the run)."""
    saved = run_dir / "tokenizer.model"
    if cfg.tokenizer.path:
        if not Path(cfg.tokenizer.path).is_file():
            raise ConfigError(f"tokenizer.path: {cfg.tokenizer.path} does not exist")
        if jax.process_index() == 0 and not saved.exists():
            shutil.copy(cfg.tokenizer.path, saved)
        return load_tokenizer(cfg.tokenizer.path)
    if not saved.exists():
        if jax.process_index() == 0:
            train_sentencepiece(corpus_texts(cfg), cfg.tokenizer.train_vocab_size, saved)
        multihost_utils.sync_global_devices("tokenizer trained")
    return load_tokenizer(saved)


def corpus_texts(cfg: RunConfig):
    """Every turn's text in the training sources (to train a tokenizer on)."""
    policy = BadInputPolicy(cfg.data.bad_input)
    for source in cfg.data.sources:
        for path in source.paths:
            for conv in read_conversations(path, source.format, bad_input=policy):
                yield from (t.content for t in conv.turns)


def build_model(cfg: RunConfig, mesh, model_cfg: LlamaConfig) -> Llama:
    """The model on its shardings: random init from a preset, or a converted checkpoint; LoRA added if asked."""
    if cfg.model.checkpoint:
        model = abstract_model(model_cfg)
        restore_params(Path(cfg.model.checkpoint) / "params", model, mesh)
    else:
        model = sharding.create_sharded(lambda: Llama(model_cfg, rngs=nnx.Rngs(params=cfg.seed)), mesh)
    if cfg.lora is not None:
        add_lora(model, cfg.lora, seed=cfg.seed)
        adapters = nnx.state(model, LoRAParam)
        nnx.update(model, jax.device_put(adapters, sharding.state_shardings(adapters, mesh)))
    return model


def resolve_model_config(cfg: RunConfig, tokenizer: Tokenizer) -> LlamaConfig:
    """The model config; a randomly initialised model takes the tokenizer's vocabulary size."""
    model_cfg = cfg.model.resolve()
    if cfg.model.preset and "vocab_size" not in cfg.model.overrides:
        model_cfg = model_cfg.replace(vocab_size=tokenizer.vocab_size)
    if tokenizer.vocab_size > model_cfg.vocab_size:
        raise ConfigError(f"the tokenizer has {tokenizer.vocab_size} tokens but the model only {model_cfg.vocab_size}")
    return model_cfg


def trainable_filter(cfg: RunConfig):
    return LoRAParam if cfg.lora is not None else nnx.Param


# -- the run ----------------------------------------------------------------------------------


@dataclass
class RunResult:
    """What a finished (or interrupted) run reports."""

    run_dir: Path
    final_step: int
    last_loss: float | None
    preempted: bool


class Trainer:
    """Owns the compiled step, the state, the data pipeline and the checkpoints of one run."""

    def __init__(self, cfg: RunConfig, run_dir: str | Path | None = None):
        from agentjax.data.pipeline import Pipeline  # TF is imported only by runs that read data

        self.cfg = cfg
        self.run_dir = Path(run_dir or cfg.output_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        sharding.initialize_distributed()
        self.mesh = sharding.make_mesh(cfg.mesh)
        self.tokenizer = prepare_tokenizer(cfg, self.run_dir)
        self.model_cfg = resolve_model_config(cfg, self.tokenizer)
        validate_run(cfg, self.mesh, self.model_cfg)
        if jax.process_index() == 0:
            (self.run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        model = build_model(cfg, self.mesh, self.model_cfg)
        self.graphdef, params, self.frozen = nnx.split(model, trainable_filter(cfg), ...)
        self.params_shardings = sharding.state_shardings(params, self.mesh)
        self.optimizer = make_optimizer(cfg.train.optimizer, cfg.train.steps, decay_mask(params))
        self.schedule = learning_rate_schedule(cfg.train.optimizer, cfg.train.steps)
        self.batch_sharding = sharding.named_sharding(("act_batch", "length"),
                                                      (cfg.train.global_batch, cfg.data.seq_len), self.mesh)
        self.state = self._initial_state(nnx.to_pure_dict(params))
        self.frozen = nnx.to_pure_dict(self.frozen)
        self._compile()
        self.pipeline = Pipeline(cfg.data, self.tokenizer, cfg.train.global_batch, jax.process_index(),
                                 jax.process_count())
        self.checkpoints = Checkpoints(self.run_dir, cfg.train.keep_checkpoints, cfg.train.async_checkpoints)
        self.start_step = 0
        latest = self.checkpoints.latest_step()
        if latest is not None:
            self.state, data_state = self.checkpoints.restore(latest, self._abstract_state())
            self.pipeline.restore(data_state)
            self.start_step = latest
            log.info("resumed from step %d in %s", latest, self.checkpoints.directory)

    def _initial_state(self, params) -> TrainState:
        replicated = NamedSharding(self.mesh, PartitionSpec())
        init = jax.jit(lambda p: TrainState(jnp.zeros((), jnp.int32), p, self.optimizer.init(p),
                                            jax.random.key_data(jax.random.key(self.cfg.seed))),
                       in_shardings=(nnx.to_pure_dict(self.params_shardings),))
        state = init(params)
        self.state_shardings = jax.tree.map(lambda x: x.sharding, state)
        self.state_shardings = self.state_shardings._replace(step=replicated, rng=replicated)
        return jax.device_put(state, self.state_shardings)

    def _abstract_state(self) -> TrainState:
        return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), self.state,
                            self.state_shardings)

    def _compile(self) -> None:
        cfg = self.cfg
        step = make_train_step(self.graphdef, self.optimizer, cfg.train.micro_batches, cfg.train.z_loss,
                               dropout=bool(cfg.lora and cfg.lora.dropout))
        frozen_shardings = jax.tree.map(lambda x: x.sharding, self.frozen)
        batch_shardings = {k: self.batch_sharding for k in BATCH_FIELDS}
        replicated = NamedSharding(self.mesh, PartitionSpec())
        with sharding.activate(self.mesh):
            self.train_step = jax.jit(step, in_shardings=(self.state_shardings, frozen_shardings, batch_shardings),
                                      out_shardings=(self.state_shardings, replicated), donate_argnums=(0,))
            self.eval_step = jax.jit(make_eval_step(self.graphdef), out_shardings=replicated)

    def global_batch(self, local: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        return sharding.host_local_to_global({k: local[k] for k in BATCH_FIELDS}, self.mesh)

    def held_out_loss(self) -> float:
        """Mean token loss over the first `eval_batches` batches of `eval_data` (the same batches every time)."""
        from agentjax.data.pipeline import Pipeline

        pipeline = Pipeline(self.cfg.eval_data, self.tokenizer, self.cfg.train.global_batch, jax.process_index(),
                            jax.process_count())
        nll = tokens = 0.0
        for i, local in enumerate(pipeline):
            if i == self.cfg.train.eval_batches:
                break
            with sharding.activate(self.mesh):
                out = self.eval_step(self.state.params, self.frozen, self.global_batch(local))
            nll, tokens = nll + float(out["nll_sum"]), tokens + float(out["tokens"])
        return nll / max(tokens, 1.0)

    def run(self) -> RunResult:
        """Train until `train.steps`, SIGTERM (save and stop), or a non-finite loss (stop, keep the last good)."""
        cfg = self.cfg.train
        preempt = _PreemptionFlag()
        log_ = MetricsLog(self.run_dir, cfg.steps, self.start_step, enabled=jax.process_index() == 0)
        flops_per_token = perf.train_flops_per_token(self.model_cfg, self.cfg.data.seq_len)
        peak = (perf.device_peak_flops() or perf.measured_matmul_peak()) * jax.device_count()
        step, last_loss, pending = self.start_step, None, None
        window_start, window_tokens = time.perf_counter(), 0
        batches = iter(self.pipeline)
        try:
            while step < cfg.steps:
                batch = self.global_batch(next(batches))
                with sharding.activate(self.mesh):
                    self.state, metrics = self.train_step(self.state, self.frozen, batch)
                step += 1
                window_tokens += cfg.global_batch * self.cfg.data.seq_len
                if pending is not None:  # read the previous step while this one runs
                    last_loss = self._check(*pending)
                pending = (step, metrics)
                if step % cfg.log_every == 0 or step == cfg.steps:
                    last_loss = self._check(*pending)
                    pending = None
                    elapsed = time.perf_counter() - window_start
                    record = {k: float(v) for k, v in jax.device_get(metrics).items()}
                    record.update(learning_rate=float(self.schedule(step - 1)),
                                  tokens_per_s=window_tokens / elapsed,
                                  mfu=window_tokens / elapsed * flops_per_token / peak,
                                  packing_efficiency=self.pipeline.counters["packing_efficiency"])
                    if cfg.eval_every and self.cfg.eval_data is not None and step % cfg.eval_every == 0:
                        record["held_out_loss"] = self.held_out_loss()
                    log_.write(step, record)
                    window_start, window_tokens = time.perf_counter(), 0
                log_.advance()
                stop = preempt.any()
                if step % cfg.checkpoint_every == 0 or step == cfg.steps or stop:
                    if pending is not None:  # never save a state whose loss was not checked
                        last_loss = self._check(*pending)
                        pending = None
                    self.checkpoints.save(self.state, self.pipeline.state())
                if stop:
                    log.warning("SIGTERM: saved step %d; rerun the same command to resume", step)
                    break
        finally:
            self.checkpoints.close()
            log_.close()
            preempt.restore()
        return RunResult(self.run_dir, step, last_loss, preempt.flag)

    def _check(self, step: int, metrics) -> float:
        loss = float(metrics["loss"])
        if not math.isfinite(loss):
            raise TrainingDiverged(
                f"loss is {loss} at step {step}; stopped. The last good checkpoint (step "
                f"{self.checkpoints.latest_step()}) is kept in {self.checkpoints.directory}. Lower the learning "
                "rate, enable clipping (train.optimizer.clip_norm) or check the data.")
        if float(metrics["supervised_tokens"]) == 0:
            raise TrainingDiverged(f"step {step} had no supervised tokens")
        return loss


class _PreemptionFlag:
    """Set by SIGTERM (TPU preemption); with several hosts, any host's signal stops all of them together."""

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
