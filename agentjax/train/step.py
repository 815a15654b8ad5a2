"""The jitted train and eval steps: token-weighted loss, exact gradient accumulation, AdamW update.

Loss = sum of token losses / supervised tokens of the whole global batch. Micro-batches are scanned
and their *sums* accumulated, so 1 batch of B and M micro-batches of B/M give the same update, and
rows with few supervised tokens weigh exactly as many tokens as they have (never a mean of means).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from agentjax.train.loss import cross_entropy_sums
from agentjax.train.state import TrainState


def token_loss_sums(model, batch: dict, z_loss: float, dropout_key, frozen_layers: int = 0) -> tuple[jax.Array, dict]:
    """(objective sum, parts): summed weighted cross-entropy (+ z-loss) over the batch's tokens, the logits made
    and reduced a chunk at a time (train/loss.py) so [B,T,V] float32 logits are never kept for the backward.
    `frozen_layers`: the first blocks run outside differentiation (Llama.features)."""
    features = model.features(batch["inputs"], batch["positions"], batch["segment_ids"], dropout_key=dropout_key,
                              frozen_layers=frozen_layers)
    weights = batch["weights"].astype(jnp.float32)
    objective, nll, z = cross_entropy_sums(features, model.head_kernel(), batch["targets"], weights, z_loss)
    return objective, {"nll_sum": nll, "z_sum": z, "tokens": jnp.sum(weights)}


def split_micro_batches(batch: dict, n: int) -> dict:
    """[B, ...] -> [n, B/n, ...], micro-batch m taking rows m, m+n, ...: every device keeps its own rows."""
    def split(x):
        return x.reshape(x.shape[0] // n, n, *x.shape[1:]).swapaxes(0, 1)
    return jax.tree.map(split, batch)


def make_train_step(graphdef, optimizer: optax.GradientTransformation, micro_batches: int, z_loss: float,
                    dropout: bool, frozen_layers: int = 0) -> Callable:
    """step(state, frozen, batch) -> (state, metrics); `frozen` holds the non-trainable weights, `frozen_layers`
    the number of first blocks no gradient runs through (the optimizer must keep them: optim.keep_frozen)."""

    def sums_and_grads(params, frozen, batch, key):
        def objective(p):
            model = nnx.merge(graphdef, p, frozen)
            return token_loss_sums(model, batch, z_loss, key, frozen_layers)
        (_, parts), grads = jax.value_and_grad(objective, has_aux=True)(params)
        return parts, grads

    def step(state: TrainState, frozen, batch: dict):
        key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)

        def micro_step(micro_batch, i):
            return sums_and_grads(state.params, frozen, micro_batch, jax.random.fold_in(key, i) if dropout else None)

        if micro_batches == 1:  # no accumulators: zero-filling them would cost a pass over all gradients
            parts, grads = micro_step(batch, 0)
        else:
            def accumulate(carry, xs):
                return jax.tree.map(jnp.add, carry, micro_step(*xs)), None

            zeros = ({"nll_sum": 0.0, "z_sum": 0.0, "tokens": 0.0},
                     jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), state.params))
            micro = (split_micro_batches(batch, micro_batches), jnp.arange(micro_batches))
            (parts, grads), _ = jax.lax.scan(accumulate, zeros, micro)
        tokens = parts["tokens"]
        grads = jax.tree.map(lambda g, p: (g.astype(jnp.float32) / jnp.maximum(tokens, 1.0)).astype(p.dtype),
                             grads, state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {
            "loss": parts["nll_sum"] / jnp.maximum(tokens, 1.0),
            "z_loss": parts["z_sum"] / jnp.maximum(tokens, 1.0),
            "supervised_tokens": tokens,
            "grad_norm": optax.tree.norm(grads),
        }
        return TrainState(state.step + 1, params, opt_state, state.rng), metrics

    return step


def make_eval_step(graphdef) -> Callable:
    """eval(params, frozen, batch) -> {nll_sum, tokens}: held-out loss sums, no dropout."""

    def evaluate(params, frozen, batch):
        _, parts = token_loss_sums(nnx.merge(graphdef, params, frozen), batch, 0.0, None)
        return {"nll_sum": parts["nll_sum"], "tokens": parts["tokens"]}

    return evaluate
