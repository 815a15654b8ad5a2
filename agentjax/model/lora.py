"""LoRA: low-rank adapters on chosen projections; only they train, and they merge back into the kernels.

`add_lora` wraps each targeted `Dense` of the stacked layers in a `LoRADense` holding `lora_a`
[layers, *in, r] and `lora_b` [layers, r, *out] (zero-initialised, so training starts at the base
model). Adapters are `LoRAParam`s, a Param subclass, so filters can pick them out for the optimizer
and for adapter-only checkpoints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx

from agentjax.configlib import ConfigError, ConfigSection
from agentjax.model.llama import Dense, Llama, contract

TARGETS = {
    "q": ("attn", "q_proj"), "k": ("attn", "k_proj"), "v": ("attn", "v_proj"), "o": ("attn", "o_proj"),
    "gate": ("mlp", "gate_proj"), "up": ("mlp", "up_proj"), "down": ("mlp", "down_proj"),
}


@dataclass(frozen=True)
class LoRAConfig(ConfigSection):
    """Rank, scale (alpha / rank), dropout on the adapter input, and which projections get adapters."""

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: tuple[str, ...] = ("q", "v")

    def validate(self):
        unknown = set(self.targets) - set(TARGETS)
        if unknown:
            raise ConfigError(f"targets: unknown projection(s) {sorted(unknown)}; choose from {list(TARGETS)}")
        if self.rank < 1 or not 0 <= self.dropout < 1:
            raise ConfigError(f"rank must be >= 1 and dropout in [0, 1), got {self.rank}, {self.dropout}")


class LoRAParam(nnx.Param):
    """A trainable adapter weight (the base weights stay frozen)."""


class LoRADense(nnx.Module):
    """base(x) + scale * B(A(dropout(x))): a frozen Dense plus a rank-r update (float32 adapters, computed
    in the base's compute dtype)."""

    def __init__(self, base: Dense, cfg: LoRAConfig, key: jax.Array):
        self.base = base
        self.scale = cfg.alpha / cfg.rank
        self.dropout = cfg.dropout
        kernel = base.kernel
        n_layers = kernel.shape[0]
        axes = kernel.get_metadata()["axes"]
        n_in = len(base.in_shape)
        a_shape = (n_layers, *base.in_shape, cfg.rank)
        # float32 whatever the base's dtype: adapters are the master weights the optimizer updates
        a = jax.random.normal(key, a_shape, jnp.float32) / math.sqrt(math.prod(base.in_shape))
        self.lora_a = LoRAParam(a, axes=(axes[0], *axes[1:1 + n_in], "lora_rank"))
        self.lora_b = LoRAParam(jnp.zeros((n_layers, cfg.rank, *base.out_shape), jnp.float32),
                                axes=(axes[0], "lora_rank", *axes[1 + n_in:]))

    def __call__(self, x: jax.Array, dropout_key: jax.Array | None = None) -> jax.Array:
        h = x
        if self.dropout and dropout_key is not None:
            keep = jax.random.bernoulli(dropout_key, 1 - self.dropout, x.shape)
            h = jnp.where(keep, x / (1 - self.dropout), 0).astype(x.dtype)
        down = contract(h, self.lora_a[...], len(self.base.in_shape), self.base.dtype)
        up = contract(down, self.lora_b[...], 1, self.base.dtype)
        return self.base(x) + (self.scale * up).astype(self.base.dtype)

    def merged(self) -> Dense:
        """The base Dense with the adapter folded into its kernel (for export)."""
        a, b = self.lora_a[...].astype(jnp.float32), self.lora_b[...].astype(jnp.float32)
        delta = jax.vmap(lambda x, y: jnp.tensordot(x, y, axes=1))(a, b)  # per layer [*in, r] @ [r, *out]
        kernel = self.base.kernel
        kernel[...] = (kernel[...].astype(jnp.float32) + self.scale * delta).astype(kernel.dtype)
        return self.base


def add_lora(model: Llama, cfg: LoRAConfig, seed: int = 0) -> Llama:
    """Wrap the targeted projections of every layer with adapters and freeze every base kernel (in place);
    returns the model."""
    _mark_frozen(model, True)  # only the adapters train
    keys = jax.random.split(jax.random.key(seed), len(cfg.targets))
    for name, key in zip(cfg.targets, keys):
        parent_name, proj_name = TARGETS[name]
        parent = getattr(model.layers, parent_name)
        setattr(parent, proj_name, LoRADense(getattr(parent, proj_name), cfg, key))
    return model


def merge_lora(model: Llama) -> Llama:
    """Fold every adapter into its base kernel and drop the adapters (in place); returns the model."""
    for parent_name, proj_name in TARGETS.values():
        parent = getattr(model.layers, parent_name)
        proj = getattr(parent, proj_name)
        if isinstance(proj, LoRADense):
            setattr(parent, proj_name, proj.merged())
    _mark_frozen(model, False)
    return model


def _mark_frozen(model: Llama, frozen: bool) -> None:
    """Say whether the layers' kernels train (Dense reads a frozen kernel in its stored layout)."""
    for _, module in nnx.iter_graph(model.layers):
        if isinstance(module, Dense):
            module.frozen = frozen
