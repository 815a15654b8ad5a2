"""Token cross-entropy fused with the output projection, computed in chunks of the sequence.

The logits of a batch ([B,T,V] float32: 262 MB for 4 x 512 tokens of a 32k vocabulary) are never held
whole: each chunk's logits are made, reduced to the loss sums and, when differentiating, turned at once
into the gradients of the features and of the output kernel, then dropped. The backward pass only scales
those gradients by the incoming cotangent, so there is no recomputation and no logits residual.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from agentjax.sharding import constrain

CHUNK_BYTES = 2**26  # float32 logits of one chunk (64 MiB): chunk length = CHUNK_BYTES / (4 B V), a multiple of 8


def chunk_length(batch: int, seq: int, vocab: int) -> int:
    """Tokens per row in one chunk: the whole row when its logits fit CHUNK_BYTES."""
    fit = max(8, CHUNK_BYTES // (4 * batch * vocab) // 8 * 8)
    return min(seq, fit)


def _chunks(x: jax.Array, c: int) -> jax.Array:
    """[B,T,...] -> [n, B, c, ...], padding T with zeros to a multiple of c."""
    b, t = x.shape[:2]
    pad = -t % c
    x = jnp.pad(x, ((0, 0), (0, pad)) + ((0, 0),) * (x.ndim - 2))
    return x.reshape(b, (t + pad) // c, c, *x.shape[2:]).swapaxes(0, 1)


def _chunk_sums(h, kernel, targets, weights):
    """Logits of one chunk [B,c,V] and the per-token log-partition and target logit (float32)."""
    logits = jax.lax.dot_general(h, kernel, (((2,), (0,)), ((), ())), preferred_element_type=jnp.float32)
    logits = constrain(logits, ("act_batch", "length", "act_vocab"))
    log_z = jax.nn.logsumexp(logits, axis=-1)
    target = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return logits, log_z, target


def _sums(h, kernel, targets, weights, z_loss, c, with_grads: bool):
    """(nll sum, z sum) and, with_grads, d(nll + z_loss z)/d(h, kernel), one chunk at a time."""
    def body(carry, xs):
        nll, z, dkernel = carry
        hc, tc, wc = xs
        logits, log_z, target = _chunk_sums(hc, kernel, tc, wc)
        nll = nll + jnp.sum(wc * (log_z - target))
        z = z + jnp.sum(wc * jnp.square(log_z))
        if not with_grads:
            return (nll, z, dkernel), None
        probs = jnp.exp(logits - log_z[..., None])
        onehot = jax.nn.one_hot(tc, logits.shape[-1], dtype=jnp.float32)
        g = (wc * (1.0 + 2.0 * z_loss * log_z))[..., None] * probs - wc[..., None] * onehot
        g = g.astype(hc.dtype)
        dh = jax.lax.dot_general(g, kernel, (((2,), (1,)), ((), ())), preferred_element_type=jnp.float32)
        dkernel = dkernel + jax.lax.dot_general(hc, g, (((0, 1), (0, 1)), ((), ())), preferred_element_type=jnp.float32)
        return (nll, z, dkernel), dh.astype(hc.dtype)

    t = h.shape[1]
    xs = (_chunks(h, c), _chunks(targets, c), _chunks(weights, c))
    zero = jnp.zeros((), jnp.float32)
    dkernel = jnp.zeros(kernel.shape if with_grads else (), jnp.float32)
    (nll, z, dkernel), dh = jax.lax.scan(body, (zero, zero, dkernel), xs)
    if not with_grads:
        return nll, z
    dh = dh.swapaxes(0, 1).reshape(h.shape[0], -1, h.shape[2])[:, :t]
    return nll, z, dh, dkernel.astype(kernel.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _fused(h, kernel, targets, weights, z_loss, c):
    nll, z = _sums(h, kernel, targets, weights, z_loss, c, with_grads=False)
    return nll + z_loss * z, nll, z


def _fused_fwd(h, kernel, targets, weights, z_loss, c):
    nll, z, dh, dkernel = _sums(h, kernel, targets, weights, z_loss, c, with_grads=True)
    return (nll + z_loss * z, nll, z), (dh, dkernel, targets, weights)


def _fused_bwd(z_loss, c, saved, cotangents):
    dh, dkernel, targets, weights = saved
    g = cotangents[0]  # nll and z leave `cross_entropy_sums` under stop_gradient: their cotangents are zero
    return (g * dh).astype(dh.dtype), (g * dkernel).astype(dkernel.dtype), None, jnp.zeros_like(weights)


_fused.defvjp(_fused_fwd, _fused_bwd)


def cross_entropy_sums(h: jax.Array, kernel: jax.Array, targets: jax.Array, weights: jax.Array,
                       z_loss: float) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(objective, nll sum, z sum) of features h [B,T,D] through the output kernel [D,V] against targets [B,T],
    token weights [B,T]: objective = sum w (log Z - logit[target]) + z_loss sum w (log Z)^2. Differentiable in
    h and kernel (objective only; weights are data)."""
    c = chunk_length(h.shape[0], h.shape[1], kernel.shape[1])
    objective, nll, z = _fused(h, kernel.astype(h.dtype), targets, weights.astype(jnp.float32), float(z_loss), c)
    return objective, jax.lax.stop_gradient(nll), jax.lax.stop_gradient(z)
