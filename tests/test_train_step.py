"""The train step's loss and gradient: token-weighted over the whole batch, exact under gradient accumulation, and
stopped below frozen blocks.

The gradient tests use plain SGD (update = -grad) so that any difference in the gradient shows in the parameters;
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

from agentjax import perf
from agentjax.configlib import ConfigError
from agentjax.model import Llama, preset
from agentjax.train.config import OptimizerConfig
from agentjax.train.optim import decay_mask, frozen_layers_mask, make_optimizer
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


FROZEN = 2  # of the 3 blocks below: the first two train nothing


@pytest.fixture(scope="module")
def three_blocks():
    """An untied 3-block model, the full gradient's SGD step, and the same step with the first FROZEN blocks frozen."""
    cfg = preset("tiny", vocab_size=300, n_layers=3, tie_embeddings=False)
    graphdef, params = nnx.split(Llama(cfg, rngs=nnx.Rngs(params=5)), nnx.Param)
    return graphdef, params, cfg


def test_frozen_blocks_get_no_gradient_and_the_rest_get_the_full_models(three_blocks, batch):
    """Freezing the first blocks changes no gradient above them (same forward, the backward only stops early); the
    frozen blocks and the embedding (whose lookup sits below them) get exactly zero."""
    graphdef, params, _ = three_blocks
    params = nnx.to_pure_dict(params)
    full, frozen = (jax.jit(make_train_step(graphdef, optax.sgd(1.0), 1, Z_LOSS, dropout=False, frozen_layers=n))
                    for n in (0, FROZEN))
    state = make_init(optax.sgd(1.0), 0)(params)
    (full_state, full_metrics), (frozen_state, frozen_metrics) = full(state, {}, batch), frozen(state, {}, batch)
    np.testing.assert_allclose(float(frozen_metrics["loss"]), float(full_metrics["loss"]), rtol=1e-6)
    before, after_full, after_frozen = (flat_params(p) for p in (params, full_state.params, frozen_state.params))
    for name in before:
        full_update, frozen_update = after_full[name] - before[name], after_frozen[name] - before[name]
        if name.startswith("layers/"):
            assert np.abs(full_update[:FROZEN]).max() > 0, name
            np.testing.assert_array_equal(frozen_update[:FROZEN], 0, err_msg=name)
            assert_updates_close(before[name][FROZEN:], frozen_update[FROZEN:], full_update[FROZEN:], 1e-5, name)
        elif name.startswith("embed"):
            np.testing.assert_array_equal(frozen_update, 0, err_msg=name)
        else:  # final norm, output projection
            assert_updates_close(before[name], frozen_update, full_update, 1e-5, name)


def test_adamw_keeps_frozen_blocks_exactly_as_loaded(three_blocks, batch):
    """Weight decay moves every weight it sees, gradient or not: the optimizer's frozen mask must hold the frozen
    blocks (and the untied embedding) bit for bit, while the trained blocks move."""
    graphdef, params, _ = three_blocks
    cfg = OptimizerConfig(learning_rate=1e-2, weight_decay=0.1)
    optimizer = make_optimizer(cfg, 10, decay_mask(params), frozen_layers_mask(params, FROZEN))
    step = jax.jit(make_train_step(graphdef, optimizer, 1, 0.0, dropout=False, frozen_layers=FROZEN))
    state = make_init(optimizer, 0)(nnx.to_pure_dict(params))
    for _ in range(2):
        state, _ = step(state, {}, batch)
    before, after = flat_params(nnx.to_pure_dict(params)), flat_params(state.params)
    for name in before:
        if name.startswith("layers/"):
            np.testing.assert_array_equal(after[name][:FROZEN], before[name][:FROZEN], err_msg=name)
            assert np.abs(after[name][FROZEN:] - before[name][FROZEN:]).max() > 0, name
        elif name.startswith("embed"):
            np.testing.assert_array_equal(after[name], before[name], err_msg=name)
        else:
            assert np.abs(after[name] - before[name]).max() > 0, name


def test_freezing_every_block_is_refused_naming_the_field(three_blocks):
    """frozen_layers must leave a block to train: the error names train.frozen_layers and the model's depth."""
    _, params, cfg = three_blocks
    with pytest.raises(ConfigError, match=r"train.frozen_layers: must be below the model's 3 layers, got 3"):
        frozen_layers_mask(params, cfg.n_layers)


def test_train_flops_count_no_backward_below_frozen_blocks():
    """MFU's numerator: a full step is 3x the forward; freezing k blocks removes exactly their backward (2x their
    forward), LoRA's frozen base halves the backward it runs through."""
    cfg, seq = preset("smollm2-135m"), 512
    forward, block = perf.forward_flops_per_token(cfg, seq), perf.layer_flops_per_token(cfg, seq)
    assert perf.train_flops_per_token(cfg, seq) == pytest.approx(3 * forward)
    assert perf.train_flops_per_token(cfg, seq, frozen_layers=15) == pytest.approx(3 * forward - 2 * 15 * block)
    assert perf.train_flops_per_token(cfg, seq, frozen_base=True, frozen_layers=15) == pytest.approx(
        2 * forward - 15 * block)
