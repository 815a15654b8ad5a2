"""The train step's loss and gradient: token-weighted over the whole batch, exact under gradient accumulation.

Both tests use plain SGD (update = -grad) so that any difference in the gradient shows in the parameters;
Adam's first step (about lr * sign(grad)) would hide a wrongly scaled gradient.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from train_support import flat_params

from agentjax.model import Llama, preset
from agentjax.train.state import make_init
from agentjax.train.step import make_train_step

CFG = preset("tiny", vocab_size=300)
ROWS, LENGTH = 8, 32
# Supervised tokens per row: very different counts (one row has none), so micro-batches of rows
# {m, m+4} carry 1+29, 32+0, 3+17, 12+7 tokens and a mean of per-micro-batch means is far off.
SUPERVISED = [1, 32, 3, 12, 29, 0, 17, 7]


@pytest.fixture(scope="module")
def model_parts():
    graphdef, params = nnx.split(Llama(CFG, rngs=nnx.Rngs(params=3)), nnx.Param)
    return graphdef, nnx.to_pure_dict(params)


@pytest.fixture(scope="module")
def batch():
    """Two packed segments per row, positions restarting, the last SUPERVISED[r] tokens of each row trained."""
    rng = np.random.RandomState(0)
    tokens = rng.randint(1, CFG.vocab_size, (ROWS, LENGTH + 1)).astype(np.int32)
    segment_ids = np.where(np.arange(LENGTH) < 11, 1, 2)[None].repeat(ROWS, 0).astype(np.int32)
    positions = np.where(np.arange(LENGTH) < 11, np.arange(LENGTH), np.arange(LENGTH) - 11)[None].repeat(ROWS, 0)
    weights = np.stack([np.arange(LENGTH) >= LENGTH - n for n in SUPERVISED]).astype(np.float32)
    return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "positions": positions.astype(np.int32),
            "segment_ids": segment_ids, "weights": weights}


Z_LOSS = 1e-3  # on, so that its sums are checked too


@pytest.fixture(scope="module")
def sgd_steps(model_parts):
    """{micro_batches: jitted step} with SGD(1.0): the update is exactly minus the gradient."""
    graphdef, _ = model_parts
    return {m: jax.jit(make_train_step(graphdef, optax.sgd(1.0), m, Z_LOSS, dropout=False)) for m in (1, 4)}


def mean_loss(graphdef, params, batch):
    """Token-weighted mean cross-entropy + z-loss, written independently of agentjax.train.step."""
    logits = nnx.merge(graphdef, params)(batch["inputs"], batch["positions"], batch["segment_ids"])
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
    z = jnp.square(jax.nn.logsumexp(logits, axis=-1))
    return jnp.sum((ce + Z_LOSS * z) * batch["weights"]) / jnp.sum(batch["weights"]), ce


def test_four_micro_batches_give_the_same_update_as_one_batch(model_parts, batch, sgd_steps):
    """Scanning 4 micro-batches of 2 rows and summing token losses gives the one-batch-of-8 update (float32, rtol 1e-5)."""
    _, params = model_parts
    state = make_init(optax.sgd(1.0), 0)(params)
    whole, whole_metrics = sgd_steps[1](state, {}, batch)
    split, split_metrics = sgd_steps[4](state, {}, batch)
    before, after_whole, after_split = flat_params(params), flat_params(whole.params), flat_params(split.params)
    for name in before:
        assert np.abs(after_whole[name] - before[name]).max() > 0, name
        assert_updates_close(before[name], after_split[name] - before[name], after_whole[name] - before[name], 1e-5, name)
    for key in ("loss", "z_loss", "supervised_tokens", "grad_norm"):
        np.testing.assert_allclose(float(split_metrics[key]), float(whole_metrics[key]), rtol=1e-6, err_msg=key)


def test_loss_and_gradient_are_token_weighted_over_the_batch(model_parts, batch, sgd_steps):
    """loss = sum of token losses / supervised tokens, and the gradient is the per-row gradients weighted by
    each row's token count (a row with 32 trained tokens counts 32 times as much as a row with 1)."""
    graphdef, params = model_parts
    new_state, metrics = sgd_steps[1](make_init(optax.sgd(1.0), 0)(params), {}, batch)

    _, ce = jax.jit(mean_loss, static_argnums=0)(graphdef, params, batch)
    losses, weights = np.asarray(ce, np.float64), batch["weights"]
    expected = (losses * weights).sum() / weights.sum()
    mean_of_row_means = np.mean([(losses[r] * weights[r]).sum() / n for r, n in enumerate(SUPERVISED) if n])
    assert abs(mean_of_row_means - expected) > 1e-2  # the data tells the two normalisations apart
    assert float(metrics["supervised_tokens"]) == sum(SUPERVISED)
    np.testing.assert_allclose(float(metrics["loss"]), expected, rtol=1e-6)

    row_grad = jax.jit(jax.grad(lambda p, row: mean_loss(graphdef, p, row)[0]))
    expected_grad = jax.tree.map(jnp.zeros_like, params)
    for r, n in enumerate(SUPERVISED):
        if n:
            g = row_grad(params, {k: v[r:r + 1] for k, v in batch.items()})
            expected_grad = jax.tree.map(lambda acc, x: acc + x * (n / sum(SUPERVISED)), expected_grad, g)
    before, after, expected_update = flat_params(params), flat_params(new_state.params), flat_params(expected_grad)
    for name in before:
        assert_updates_close(before[name], before[name] - after[name], expected_update[name], 1e-4, name)


def assert_updates_close(params, update, expected, rtol: float, name: str) -> None:
    """Updates read off float32 parameters (new - old) carry the parameters' rounding: allow 2 ulps of them."""
    np.testing.assert_allclose(update, expected, rtol=rtol, atol=2 * np.spacing(np.abs(params).max()), err_msg=name)
