"""A training run directory, self-describing: `config.yaml` + its tokenizer file(s) + `checkpoints/` rebuild its model.

Under LoRA the checkpoints hold only the adapters; the frozen base comes back from `model.checkpoint`
(saved as an absolute path) or from the run's seed (random init does not depend on the mesh).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import jax
import yaml
from flax import nnx

from agentjax import sharding
from agentjax.configlib import ConfigError, load, to_dict
from agentjax.util.atomic import atomic_write
from agentjax.data.tokenizer import Tokenizer, load_tokenizer
from agentjax.model.llama import Llama
from agentjax.model.lora import merge_lora
from agentjax.train.build import build_model, resolve_model_config, trainable_filter
from agentjax.train.checkpoint import Checkpoints
from agentjax.train.config import RunConfig

CONFIG_FILE = "config.yaml"
log = logging.getLogger(__name__)


def is_run_dir(path: str | Path) -> bool:
    return (Path(path) / CONFIG_FILE).is_file() and (Path(path) / "checkpoints").is_dir()


def write_run_config(cfg: RunConfig, run_dir: Path) -> None:
    """Save the run's config with the paths it needs later made absolute (the base checkpoint, the tokenizer)."""
    absolute = lambda p: p and str(Path(p).absolute())  # noqa: E731
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, checkpoint=absolute(cfg.model.checkpoint)),
                              tokenizer=dataclasses.replace(cfg.tokenizer, path=absolute(cfg.tokenizer.path)))
    with atomic_write(run_dir / CONFIG_FILE) as f:
        yaml.safe_dump(to_dict(cfg), f, sort_keys=False)


def read_run_config(run_dir: str | Path) -> RunConfig:
    """The config a run was (last) started with, its base checkpoint and tokenizer paths absolute."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(f"run: {run_dir} is not a training run directory (no {CONFIG_FILE})")
    return load(RunConfig, path)


def load_trained_model(run_dir: str | Path, mesh=None, step: int | None = None) -> tuple[Llama, Tokenizer]:
    """The model a training run produced at `step` (default: its latest finished checkpoint), LoRA merged
    into the kernels, with its parameters sharded over `mesh` (default: every device, fsdp), and its tokenizer."""
    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir)
    tokenizer = load_tokenizer(run_dir)
    mesh = mesh or sharding.make_mesh()
    checkpoints = Checkpoints(run_dir, read_only=True)
    try:
        step = checkpoints.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"{run_dir}: no finished checkpoint yet")
        model = build_model(cfg, mesh, resolve_model_config(cfg, tokenizer), shapes_only=cfg.lora is None)
        trainable = nnx.state(model, trainable_filter(cfg))
        target = jax.tree.map(lambda v, s: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=s),
                              nnx.to_pure_dict(trainable), nnx.to_pure_dict(sharding.state_shardings(trainable, mesh)))
        nnx.replace_by_pure_dict(trainable, checkpoints.restore_params(step, target))
    finally:
        checkpoints.close()
    nnx.update(model, trainable)
    log.info("loaded %s at step %d", run_dir, step)
    return merge_lora(model), tokenizer
