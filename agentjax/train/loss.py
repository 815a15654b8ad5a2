"""Token cross-entropy fused with the output projection, computed in chunks, only where tokens are supervised.

The logits of a batch ([B,T,V] float32: 262 MB for 4 x 512 tokens of a 32k vocabulary) are never held
whole: each chunk's logits are made, reduced to the loss sums and, when differentiating, turned at once
into the gradients of the features and of the output kernel, then dropped. The backward pass only scales
those gradients by the incoming cotangent, so there is no recomputation and no logits residual.

Two savings make the output projection cost what the loss needs, not what the batch holds:
- each row's supervised tokens are moved to its front (a stable sort by weight == 0) and chunks that then hold
  no supervised token in any row are skipped, so prompts and observations cost no logits (about half of an
  agent trajectory's tokens);
- the kernel's gradient is computed only when the kernel is being differentiated (not under LoRA, where the
  output projection is frozen).
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


def _supervised_first(weights: jax.Array) -> jax.Array:
    """Per row, the token order that puts supervised tokens (weight != 0) first, each group in its own order."""
    return jnp.argsort(weights == 0, axis=1, stable=True)


def _sums(h, kernel, targets, weights, z_loss, c, grad_h: bool, grad_kernel: bool):
    """(nll sum, z sum, d/dh or None, d/dkernel or None) of d(nll + z_loss z), one chunk of supervised tokens at a
    time; the gradients only as asked."""
    order = _supervised_first(weights)
    take = functools.partial(jnp.take_along_axis, indices=order, axis=1)
    hs, ts, ws = jnp.take_along_axis(h, order[..., None], axis=1), take(targets), take(weights)

    def chunk(carry, xs):
        nll, z, dkernel = carry
        hc, tc, wc = xs
        logits = jax.lax.dot_general(hc, kernel, (((2,), (0,)), ((), ())), preferred_element_type=jnp.float32)
        logits = constrain(logits, ("act_batch", "length", "act_vocab"))
        log_z = jax.nn.logsumexp(logits, axis=-1)
        target = jnp.take_along_axis(logits, tc[..., None], axis=-1)[..., 0]
        nll = nll + jnp.sum(wc * (log_z - target))
        z = z + jnp.sum(wc * jnp.square(log_z))
        if not (grad_h or grad_kernel):
            return (nll, z, dkernel), None
        probs = jnp.exp(logits - log_z[..., None])
        onehot = jax.nn.one_hot(tc, logits.shape[-1], dtype=jnp.float32)
        g = ((wc * (1.0 + 2.0 * z_loss * log_z))[..., None] * probs - wc[..., None] * onehot).astype(hc.dtype)
        if grad_kernel:
            dkernel = dkernel + jax.lax.dot_general(hc, g, (((0, 1), (0, 1)), ((), ())),
                                                    preferred_element_type=jnp.float32)
        if not grad_h:
            return (nll, z, dkernel), None
        dh = jax.lax.dot_general(g, kernel, (((2,), (1,)), ((), ())), preferred_element_type=jnp.float32)
        return (nll, z, dkernel), dh.astype(hc.dtype)

    def body(carry, xs):
        """A chunk with no supervised token adds nothing: skip its logits."""
        skip = lambda carry, xs: (carry, jnp.zeros_like(xs[0]) if grad_h else None)
        return jax.lax.cond(jnp.any(xs[2] != 0), chunk, skip, carry, xs)

    zero = jnp.zeros((), jnp.float32)
    dkernel = jnp.zeros(kernel.shape if grad_kernel else (), jnp.float32)
    (nll, z, dkernel), dh = jax.lax.scan(body, (zero, zero, dkernel), (_chunks(hs, c), _chunks(ts, c), _chunks(ws, c)))
    if grad_h:  # back to the tokens' own order
        dh = dh.swapaxes(0, 1).reshape(h.shape[0], -1, h.shape[2])[:, :h.shape[1]]
        dh = jnp.zeros_like(dh).at[jnp.arange(h.shape[0])[:, None], order].set(dh)
    return nll, z, dh if grad_h else None, dkernel.astype(kernel.dtype) if grad_kernel else None


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _fused(h, kernel, targets, weights, z_loss, c):
    nll, z, _, _ = _sums(h, kernel, targets, weights, z_loss, c, grad_h=False, grad_kernel=False)
    return nll + z_loss * z, nll, z


def _fused_fwd(h, kernel, targets, weights, z_loss, c):
    nll, z, dh, dkernel = _sums(h.value, kernel.value, targets.value, weights.value, z_loss, c,
                                grad_h=h.perturbed, grad_kernel=kernel.perturbed)
    return (nll + z_loss * z, nll, z), (dh, dkernel, weights.value)


def _fused_bwd(z_loss, c, saved, cotangents):
    dh, dkernel, weights = saved
    g = cotangents[0]  # nll and z leave `cross_entropy_sums` under stop_gradient: their cotangents are zero
    scale = lambda d: None if d is None else (g * d).astype(d.dtype)
    return scale(dh), scale(dkernel), None, jnp.zeros_like(weights)


_fused.defvjp(_fused_fwd, _fused_bwd, symbolic_zeros=True)


def cross_entropy_sums(h: jax.Array, kernel: jax.Array, targets: jax.Array, weights: jax.Array,
                       z_loss: float) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(objective, nll sum, z sum) of features h [B,T,D] through the output kernel [D,V] against targets [B,T],
    token weights [B,T]: objective = sum w (log Z - logit[target]) + z_loss sum w (log Z)^2. Differentiable in
    h and kernel (objective only; weights are data)."""
    c = chunk_length(h.shape[0], h.shape[1], kernel.shape[1])
    objective, nll, z = _fused(h, kernel.astype(h.dtype), targets, weights.astype(jnp.float32), float(z_loss), c)
    return objective, jax.lax.stop_gradient(nll), jax.lax.stop_gradient(z)
