"""The chunked, fused cross-entropy equals the plain one over whole logits, in value and gradients, without their memory."""

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np

from agentjax.train import loss


def _plain(h, kernel, targets, weights, z_loss):
    logits = jnp.einsum("btd,dv->btv", h, kernel)
    log_z = jax.nn.logsumexp(logits, axis=-1)
    target = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    nll, z = jnp.sum(weights * (log_z - target)), jnp.sum(weights * log_z**2)
    return nll + z_loss * z, nll, z


def _inputs(b, t, d, v, seed=0):
    rng = np.random.RandomState(seed)
    h = jnp.asarray(rng.randn(b, t, d), jnp.float32)
    kernel = jnp.asarray(rng.randn(d, v) * 0.3, jnp.float32)
    targets = jnp.asarray(rng.randint(0, v, (b, t)), jnp.int32)
    weights = jnp.asarray((rng.rand(b, t) > 0.3).astype(np.float32))  # some tokens unsupervised
    return h, kernel, targets, weights


def test_fused_loss_equals_plain_loss_and_gradients(monkeypatch):
    """Several chunks with a ragged last one (T=37 in chunks of 8): sums and d/d(features, kernel) match, z-loss on."""
    monkeypatch.setattr(loss, "CHUNK_BYTES", 8 * 4 * 3 * 50)
    h, kernel, targets, weights = _inputs(3, 37, 16, 50)
    assert loss.chunk_length(3, 37, 50) == 8
    got = loss.cross_entropy_sums(h, kernel, targets, weights, 1e-2)
    want = _plain(h, kernel, targets, weights, 1e-2)
    np.testing.assert_allclose(np.array(got), np.array(want), rtol=1e-5)
    grad_got = jax.grad(lambda h, k: loss.cross_entropy_sums(h, k, targets, weights, 1e-2)[0], argnums=(0, 1))(h, kernel)
    grad_want = jax.grad(lambda h, k: _plain(h, k, targets, weights, 1e-2)[0], argnums=(0, 1))(h, kernel)
    for g, w in zip(grad_got, grad_want):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-5, atol=1e-5 * float(jnp.abs(w).max()))


def test_fused_loss_never_holds_the_whole_logits():
    """Compiled value-and-grad holds a few chunks of logits (4 x 512 x 32k: 4 chunks), never the whole [B,T,V] array."""
    h, kernel, targets, weights = _inputs(4, 512, 64, 32000)
    step = jax.jit(jax.value_and_grad(lambda h, k: loss.cross_entropy_sums(h, k, targets, weights, 0.0)[0], argnums=(0, 1)))
    temp = step.lower(h, kernel).compile().memory_analysis().temp_size_in_bytes
    whole_logits = 4 * 512 * 32000 * 4
    assert loss.chunk_length(4, 512, 32000) == 128
    assert temp <= 2.5 * loss.CHUNK_BYTES < whole_logits, (temp, whole_logits)


def test_rows_with_unsupervised_runs_match_the_plain_loss(monkeypatch):
    """Trajectory-like weights (an unsupervised prompt, supervised replies between observations, a row with no
    supervised token): supervised tokens are sorted to the front and empty chunks skipped, yet the sums and both
    gradients equal the plain loss's."""
    monkeypatch.setattr(loss, "CHUNK_BYTES", 8 * 4 * 3 * 50)
    h, kernel, targets, _ = _inputs(3, 37, 16, 50, seed=1)
    weights = np.zeros((3, 37), np.float32)
    weights[0, 10:15] = weights[0, 20:30] = 1.0
    weights[1, 30:] = 0.5
    weights = jnp.asarray(weights)  # row 2 has no supervised token
    got = loss.cross_entropy_sums(h, kernel, targets, weights, 1e-2)
    np.testing.assert_allclose(np.array(got), np.array(_plain(h, kernel, targets, weights, 1e-2)), rtol=1e-5)
    grad_got = jax.grad(lambda h, k: loss.cross_entropy_sums(h, k, targets, weights, 1e-2)[0], argnums=(0, 1))(h, kernel)
    grad_want = jax.grad(lambda h, k: _plain(h, k, targets, weights, 1e-2)[0], argnums=(0, 1))(h, kernel)
    for g, w in zip(grad_got, grad_want):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-5, atol=1e-5 * float(jnp.abs(w).max()))
    assert not np.asarray(grad_got[0][2]).any()  # no supervised token, no gradient


def _kernel_gradient_dots(jaxpr, kernel_shape) -> int:
    """dot_generals (at any depth) whose output has the output kernel's shape: the kernel's gradient."""
    count = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general" and eqn.outvars[0].aval.shape[-2:] == kernel_shape:
            count += 1
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            count += _kernel_gradient_dots(sub, kernel_shape)
    return count


def test_frozen_kernel_gets_no_gradient_computation():
    """Differentiating in the features only (a frozen output projection, as under LoRA) traces no dot that makes
    the kernel's [D,V] gradient; differentiating in both does, and the features' gradient is the same."""
    h, kernel, targets, weights = _inputs(2, 16, 8, 40)
    objective = lambda h, k: loss.cross_entropy_sums(h, k, targets, weights, 0.0)[0]
    only_h = jax.make_jaxpr(jax.grad(objective, argnums=0))(h, kernel).jaxpr
    both = jax.make_jaxpr(jax.grad(objective, argnums=(0, 1)))(h, kernel).jaxpr
    assert _kernel_gradient_dots(only_h, kernel.shape) == 0
    assert _kernel_gradient_dots(both, kernel.shape) >= 1
    np.testing.assert_allclose(np.asarray(jax.grad(objective)(h, kernel)),
                               np.asarray(jax.grad(objective, argnums=(0, 1))(h, kernel)[0]), rtol=1e-6)
