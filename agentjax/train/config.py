"""The typed config of a training run (`agentjax train --config X.yaml key=value ...`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from agentjax.configlib import ConfigError, ConfigSection, from_dict
from agentjax.data.config import DataConfig
from agentjax.model.checkpoint import read_config
from agentjax.model.llama import LlamaConfig
from agentjax.model.lora import LoRAConfig
from agentjax.sharding import MeshConfig


@dataclass(frozen=True)
class ModelSection(ConfigSection):
    """Where the model comes from: a preset (random init) or a converted checkpoint, plus field changes."""

    preset: str | None = None
    checkpoint: str | None = None  # an agentjax model directory (`agentjax convert hf-to-agentjax`)
    overrides: dict[str, Any] = field(default_factory=dict)  # LlamaConfig fields, e.g. {remat: full, dtype: bfloat16}
    attention: str = "auto"  # attention backend: auto | reference | blockwise | splash | cudnn (model/attention.py)

    def validate(self):
        if (self.preset is None) == (self.checkpoint is None):
            raise ConfigError("set exactly one of preset (random init) and checkpoint (converted weights)")

    def resolve(self, shapes_of: str | None = None):
        """The LlamaConfig this section describes (reads the checkpoint's config.json, or takes the shapes of the
        preset `shapes_of` in its place: an AOT compile without the files)."""
        changes = {"attention": self.attention, **self.overrides}
        if self.checkpoint is not None and shapes_of is None:
            return read_config(self.checkpoint, **changes)
        return from_dict(LlamaConfig, {"preset": shapes_of or self.preset, **changes}, "model")


@dataclass(frozen=True)
class TokenizerSection(ConfigSection):
    """A tokenizer (a sentencepiece .model, a tokenizer.json, or a model directory holding one), or train a small
    sentencepiece model on the data."""

    path: str | None = None
    train_vocab_size: int | None = None  # when set and path is missing, train one on the sources' text

    def validate(self):
        if self.path is None and self.train_vocab_size is None:
            raise ConfigError("set path (a tokenizer file or model directory) or train_vocab_size (train one on the data)")


@dataclass(frozen=True)
class OptimizerConfig(ConfigSection):
    """AdamW with decoupled weight decay (not on norms), global-norm clipping, and a schedule."""

    learning_rate: float = 3e-4
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1  # cosine/linear decay ends at learning_rate * min_lr_ratio
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.0
    clip_norm: float | None = 1.0

    def validate(self):
        """Refuse settings that would train the wrong way or into NaN before any step runs."""
        finite = lambda key: math.isfinite(getattr(self, key))  # noqa: E731
        checks = [("learning_rate", finite("learning_rate") and self.learning_rate > 0, "a finite number > 0"),
                  ("warmup_steps", self.warmup_steps >= 0, ">= 0"),
                  ("min_lr_ratio", 0 <= self.min_lr_ratio <= 1, "in [0, 1]"),
                  ("b1", 0 <= self.b1 < 1, "in [0, 1)"), ("b2", 0 <= self.b2 < 1, "in [0, 1)"),
                  ("eps", finite("eps") and self.eps > 0, "a finite number > 0"),
                  ("weight_decay", finite("weight_decay") and self.weight_decay >= 0, "a finite number >= 0"),
                  ("clip_norm", self.clip_norm is None or (finite("clip_norm") and self.clip_norm > 0),
                   "a finite number > 0, or null (no clipping)")]
        for key, ok, expected in checks:
            if not ok:
                raise ConfigError(f"{key}: must be {expected}, got {getattr(self, key)}")


@dataclass(frozen=True)
class TrainConfig(ConfigSection):
    """Steps, batch, accumulation, loss options, and how often to log, evaluate and checkpoint."""

    steps: int = 100
    global_batch: int = 8  # rows of data.seq_len tokens per optimizer step, over all hosts
    micro_batches: int = 1  # gradient accumulation: the global batch is split into this many scanned chunks
    z_loss: float = 0.0  # weight of log(Z)^2, keeps the softmax normaliser near 1
    # the first N decoder blocks keep their loaded weights, and no backward runs through them (nor into the
    # embedding lookup): a step costs about (forward + backward of the rest); 0 trains every block
    frozen_layers: int = 0
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    log_every: int = 10
    eval_every: int = 0  # held-out loss every N steps (0: never)
    eval_batches: int = 4
    checkpoint_every: int = 100
    keep_checkpoints: int = 3
    async_checkpoints: bool = True

    def validate(self):
        for key in ("steps", "global_batch", "micro_batches", "log_every", "checkpoint_every", "keep_checkpoints",
                    "eval_batches"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key}: must be >= 1, got {getattr(self, key)}")
        if self.global_batch % self.micro_batches:
            raise ConfigError(f"global_batch ({self.global_batch}) must be divisible by micro_batches ({self.micro_batches})")
        if self.frozen_layers < 0:
            raise ConfigError(f"frozen_layers: must be >= 0 (0: train every block), got {self.frozen_layers}")
        if self.eval_every < 0:
            raise ConfigError(f"eval_every: must be >= 0 (0: never), got {self.eval_every}")


@dataclass(frozen=True)
class RunConfig(ConfigSection):
    """A training run: model, tokenizer, data, mesh, optimisation, optional LoRA, where results go."""

    model: ModelSection = field(default_factory=lambda: ModelSection(preset="tiny"))
    tokenizer: TokenizerSection = field(default_factory=lambda: TokenizerSection(train_vocab_size=512))
    data: DataConfig = field(default_factory=DataConfig)
    eval_data: DataConfig | None = None  # held-out trajectories for the periodic held-out loss
    mesh: MeshConfig = field(default_factory=MeshConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    lora: LoRAConfig | None = None
    output_dir: str = "runs/train"
    seed: int = 0  # random init of a preset model and of LoRA adapters, dropout

    def validate(self):
        if self.train.eval_every and self.eval_data is None:
            raise ConfigError("train.eval_every is set but eval_data is missing; add eval_data sources or set eval_every: 0")
