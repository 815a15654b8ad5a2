"""A training run directory, self-describing: `config.yaml` + its tokenizer file(s) + `checkpoints/` rebuild its model.

Under LoRA the checkpoints hold only the adapters; the frozen base comes back from `model.checkpoint`
or from the run's seed (random init does not depend on the mesh). The base path is saved relative to the run
directory, so a run and its base moved together still work; a run fetched without its base (from a TPU VM)
is pointed at it with `base=` (eval's `run_base`, convert's `--base`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import jax
import yaml
from flax import nnx

from agentjax import sharding
from agentjax.configlib import ConfigError, expand_env, from_dict, read_yaml, to_dict
from agentjax.data.tokenizer import Tokenizer, load_tokenizer
from agentjax.model.llama import Llama
from agentjax.model.lora import merge_lora
from agentjax.train.build import build_model, resolve_model_config, trainable_filter
from agentjax.train.checkpoint import Checkpoints
from agentjax.train.config import RunConfig
from agentjax.util.atomic import atomic_write
from agentjax.util.storage import absolute, as_path, is_url

CONFIG_FILE = "config.yaml"
log = logging.getLogger(__name__)


def is_run_dir(path: str | Path) -> bool:
    path = as_path(path)
    return (path / CONFIG_FILE).is_file() and (path / "checkpoints").is_dir()


def write_run_config(cfg: RunConfig, run_dir: Path) -> None:
    """Save the run's config: a local base checkpoint relative to a local run directory (absolute for a run in a
    bucket, URLs as they are), the tokenizer path absolute (only a record: the run keeps its own copy)."""
    checkpoint = cfg.model.checkpoint
    if checkpoint and not is_url(checkpoint):
        checkpoint = str(Path(checkpoint).absolute())
        if not is_url(run_dir):
            checkpoint = os.path.relpath(checkpoint, Path(run_dir).absolute())
    path = cfg.tokenizer.path and str(absolute(cfg.tokenizer.path))
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, checkpoint=checkpoint),
                              tokenizer=dataclasses.replace(cfg.tokenizer, path=path))
    with atomic_write(run_dir / CONFIG_FILE) as f:
        yaml.safe_dump(to_dict(cfg), f, sort_keys=False)


def read_run_config(run_dir: str | Path, base: str | Path | None = None) -> RunConfig:
    """The config a run was (last) started with, its base checkpoint resolved against the run directory, or
    replaced by `base` (the same base model, somewhere else now)."""
    path = as_path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(f"run: {run_dir} is not a training run directory (no {CONFIG_FILE})")
    data = expand_env(read_yaml(path))
    model = data.get("model") or {}
    if base is not None:
        if not model.get("checkpoint"):
            raise ConfigError(f"{path}: the run has no base checkpoint (model.checkpoint) to replace with {base}")
        model["checkpoint"] = str(base)
    elif model.get("checkpoint") and not is_url(model["checkpoint"]):
        model["checkpoint"] = str(as_path(run_dir) / model["checkpoint"])  # relative to the run; absolute stays so
    checkpoint = model.get("checkpoint")
    if checkpoint and not (as_path(checkpoint) / "config.json").is_file():
        raise ConfigError(f"{path}: model.checkpoint: the run's base model {checkpoint} is not there (no config.json); "
                          "if the run or its base moved, name the base: eval run_base=DIR, convert --base DIR")
    return from_dict(RunConfig, data, str(path))


def load_trained_model(run_dir: str | Path, mesh=None, step: int | None = None,
                       base: str | Path | None = None) -> tuple[Llama, Tokenizer]:
    """The model a training run produced at `step` (default: its latest finished checkpoint), LoRA merged
    into the kernels, with its parameters sharded over `mesh` (default: every device, fsdp), and its tokenizer.
    `base` replaces the run's recorded base model directory (see read_run_config)."""
    model, tokenizer, _ = load_run(run_dir, mesh, step, base)
    return merge_lora(model), tokenizer


def load_run(run_dir: str | Path, mesh=None, step: int | None = None,
             base: str | Path | None = None) -> tuple[Llama, Tokenizer, RunConfig]:
    """Like load_trained_model, with LoRA adapters left unmerged, and the run's config (to export adapters)."""
    run_dir = as_path(run_dir)
    cfg = read_run_config(run_dir, base)
    tokenizer = load_tokenizer(run_dir)
    mesh = mesh or sharding.make_mesh()
    checkpoints = Checkpoints(run_dir, read_only=True)
    try:
        step = checkpoints.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"{run_dir}: no finished checkpoint yet")
        if step not in checkpoints.steps():
            raise FileNotFoundError(f"{run_dir}: no checkpoint of step {step} (kept: {checkpoints.steps()})")
        model = build_model(cfg, mesh, resolve_model_config(cfg, tokenizer), shapes_only=cfg.lora is None)
        trainable = nnx.state(model, trainable_filter(cfg))
        target = jax.tree.map(lambda v, s: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=s),
                              nnx.to_pure_dict(trainable), nnx.to_pure_dict(sharding.state_shardings(trainable, mesh)))
        nnx.replace_by_pure_dict(trainable, checkpoints.restore_params(step, target))
    finally:
        checkpoints.close()
    nnx.update(model, trainable)
    log.info("loaded %s at step %d", run_dir, step)
    return model, tokenizer, cfg
