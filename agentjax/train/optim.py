"""The optimizer: AdamW (no decay on norms), warmup then cosine/linear/constant, global-norm clipping."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from agentjax.configlib import ConfigError
from agentjax.train.config import OptimizerConfig


def learning_rate_schedule(cfg: OptimizerConfig, total_steps: int) -> optax.Schedule:
    """Linear warmup from 0 to the peak, then the configured decay to peak * min_lr_ratio at the last step."""
    peak, end = cfg.learning_rate, cfg.learning_rate * cfg.min_lr_ratio
    decay_steps = max(total_steps - cfg.warmup_steps, 1)
    decay = {
        "cosine": optax.cosine_decay_schedule(peak, decay_steps, alpha=cfg.min_lr_ratio),
        "linear": optax.linear_schedule(peak, end, decay_steps),
        "constant": optax.constant_schedule(peak),
    }[cfg.schedule]
    if not cfg.warmup_steps:
        return decay
    warmup = optax.linear_schedule(0.0, peak, cfg.warmup_steps)
    return optax.join_schedules([warmup, decay], [cfg.warmup_steps])


def decay_mask(state: nnx.State) -> dict:
    """A pure dict of booleans: weight decay on every parameter except norm scales."""
    return nnx.to_pure_dict(jax.tree.map(
        lambda v: v.replace("norm" not in v.get_metadata().get("axes", ())),
        state, is_leaf=lambda x: isinstance(x, nnx.Variable)))


def frozen_layers_mask(state: nnx.State, frozen_layers: int) -> dict:
    """A pure dict of 0/1 multipliers: 0 on the first `frozen_layers` slices of every stacked block weight, and on
    the token embedding unless it is also the output projection (tied); 1 everywhere else."""
    def mask(path, v):
        axes = v.get_metadata().get("axes", ())
        if axes[:1] == ("layers",):
            if frozen_layers >= v.shape[0]:
                raise ConfigError(f"train.frozen_layers: must be below the model's {v.shape[0]} layers, "
                                  f"got {frozen_layers}")
            keep = (jnp.arange(v.shape[0]) >= frozen_layers).reshape(-1, *[1] * (v.ndim - 1))
            return v.replace(keep.astype(jnp.float32))
        untied_embedding = path[-1] == "embed" and "lm_head" in state
        return v.replace(jnp.zeros((), jnp.float32) if untied_embedding else jnp.ones((), jnp.float32))
    return nnx.to_pure_dict(jax.tree_util.tree_map_with_path(
        lambda path, v: mask(tuple(getattr(k, "key", k) for k in path), v),
        state, is_leaf=lambda x: isinstance(x, nnx.Variable)))


def keep_frozen(mask: dict) -> optax.GradientTransformation:
    """Multiply every update by its mask (frozen_layers_mask): frozen weights stay exactly as loaded, weight decay
    included."""
    return optax.stateless(lambda updates, params=None: jax.tree.map(
        lambda u, m: u * m.astype(u.dtype), updates, mask))


def make_optimizer(cfg: OptimizerConfig, total_steps: int, mask: dict,
                   frozen: dict | None = None) -> optax.GradientTransformation:
    """The optimizer for a run of `total_steps`; `mask` (from decay_mask) says which weights decay, `frozen`
    (from frozen_layers_mask) which stay fixed."""
    schedule = learning_rate_schedule(cfg, total_steps)
    parts = [optax.clip_by_global_norm(cfg.clip_norm)] if cfg.clip_norm else []
    parts.append(optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay,
                             mask=mask))
    if frozen is not None:
        parts.append(keep_frozen(frozen))
    return optax.chain(*parts)
