"""The optimizer: AdamW (no decay on norms), warmup then cosine/linear/constant, global-norm clipping."""

from __future__ import annotations

import jax
import optax
from flax import nnx

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


def make_optimizer(cfg: OptimizerConfig, total_steps: int, mask: dict) -> optax.GradientTransformation:
    """The optimizer for a run of `total_steps`; `mask` (from decay_mask) says which weights decay."""
    schedule = learning_rate_schedule(cfg, total_steps)
    parts = [optax.clip_by_global_norm(cfg.clip_norm)] if cfg.clip_norm else []
    parts.append(optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay,
                             mask=mask))
    return optax.chain(*parts)
