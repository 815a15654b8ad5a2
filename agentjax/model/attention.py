"""Attention backends behind two functions: `self_attention` (a packed row attends to itself) and
`cache_attention` (new tokens attend to a KV cache).

Every backend computes the same thing: a query sees the keys of its own non-padding segment up to
itself (segment id 0 = padding), query head h reads kv head h // (H/K) (grouped-query attention).
- `reference`: the dense einsum over a [B,T,S] mask; the oracle every other backend is tested against.
- `blockwise`: flash-style attention in plain JAX: online softmax over key blocks, O(T) memory, a
  custom VJP that recomputes the scores; block pairs the causal/segment mask empties are skipped.
  In the cache it reads only the blocks up to the longest live row.
- `splash`: TPU Pallas splash attention with segment ids (`interpret=True` runs it on CPU, for tests).
- `cudnn`: `jax.nn.dot_product_attention(implementation="cudnn")` on NVIDIA GPUs (bf16/fp16 only).
splash and cudnn serve the full forward; in the cache they use the blockwise loop (plain JAX, any device).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from agentjax import sharding
from agentjax.configlib import ConfigError

BACKENDS = ("reference", "blockwise", "splash", "cudnn")
CHOICES = ("auto",) + BACKENDS
# What `auto` picks per platform. splash and cudnn are opt-in until they are verified on hardware (none here;
# splash is compiled for TPU slices by `agentjax compile`), and cudnn refuses float32.
AUTO = {"cpu": "blockwise", "tpu": "blockwise", "gpu": "blockwise", "cuda": "blockwise"}
PLATFORM_BACKENDS = {"tpu": ("splash",), "gpu": ("cudnn",), "cuda": ("cudnn",)}
BLOCK = 64  # query/key block of the blockwise backend (fastest of 32/64/128/256 on a 2-core CPU, fwd+bwd)
CACHE_BLOCK = 64  # key block of the cache loop (the attended length is rounded up to it): measured on a 2-core
# CPU, SmolLM2 shapes, 320 slots used: a batch-32 decode step's attention 87 ms at 64, 253 ms at 256; extends no slower
SPLASH_TILE = 128  # splash attention's query/key tile (its default)
_NEG = -1e30  # a finite "minus infinity": keeps the online softmax free of inf - inf


# ----------------------------------------------------------------------------------------------
# Choosing a backend
# ----------------------------------------------------------------------------------------------


def current_platform() -> str:
    """The platform traced code is compiled for: the active mesh's devices (AOT for a TPU slice) or the default."""
    mesh = sharding.active_mesh()
    return mesh.devices.flat[0].platform if mesh is not None else jax.default_backend()


def available(platform: str) -> tuple[str, ...]:
    """The backends that run on `platform`: the portable two and its own kernel."""
    return ("reference", "blockwise") + PLATFORM_BACKENDS.get(platform, ())


def resolve(name: str, platform: str | None = None, *, interpret: bool = False) -> str:
    """The backend `name` means on `platform` (`auto` picks by platform); a ConfigError if it cannot run there."""
    platform = platform or current_platform()
    if name not in CHOICES:
        raise ConfigError(f"model.attention: unknown backend {name!r}; known: {list(CHOICES)}")
    if name == "auto":
        return AUTO.get(platform, "blockwise")
    if name in available(platform) or (name == "splash" and interpret):
        return name
    raise ConfigError(f"model.attention: {name!r} does not run on {platform}; available there: "
                      f"{list(('auto',) + available(platform))}")


# ----------------------------------------------------------------------------------------------
# Reference (dense) attention
# ----------------------------------------------------------------------------------------------


def reference(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
    """Grouped-query attention. q [B,T,H,D], k/v [B,S,K,D], mask [B,T,S] (True = may attend)."""
    b, t, h, d = q.shape
    n_kv = k.shape[2]
    q = q.reshape(b, t, n_kv, h // n_kv, d)
    scores = jnp.einsum("btkgd,bskd->bkgts", q, k, preferred_element_type=jnp.float32) / math.sqrt(d)
    scores = jnp.where(mask[:, None, None], scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgts,bskd->btkgd", probs, v)
    return out.reshape(b, t, h, d)


def segment_mask(segment_ids: jax.Array) -> jax.Array:
    """[B,T,T] mask for a packed row: causal, within the same non-padding segment."""
    t = segment_ids.shape[1]
    causal = jnp.arange(t)[:, None] >= jnp.arange(t)[None, :]
    same = segment_ids[:, :, None] == segment_ids[:, None, :]
    return causal[None] & same & (segment_ids != 0)[:, :, None]


def cache_mask(positions: jax.Array, segment_ids: jax.Array, cache_len: int) -> jax.Array:
    """[B,T,S] mask over cache slots: a real token at position p sees slots 0..p of its own row."""
    return (jnp.arange(cache_len)[None, None, :] <= positions[:, :, None]) & (segment_ids != 0)[:, :, None]


# ----------------------------------------------------------------------------------------------
# Blockwise (flash-style) attention, plain JAX
# ----------------------------------------------------------------------------------------------


def _online_update(carry, s, mask, v_block):
    """One key block of the online softmax. carry (m, l, acc) [B,K,G,T], [B,K,G,T], [B,K,G,T,D]; s [B,K,G,T,S]."""
    m, l, acc = carry
    s = jnp.where(mask, s, _NEG)
    m_new = jnp.maximum(m, s.max(axis=-1))
    p = jnp.where(mask, jnp.exp(s - m_new[..., None]), 0.0)
    correction = jnp.exp(m - m_new)
    l = l * correction + p.sum(axis=-1)
    acc = acc * correction[..., None] + jnp.einsum("bkgts,bksd->bkgtd", p, v_block)
    return m_new, l, acc


def _finish(m, l, acc):
    """Output [B,K,G,T,D] and log-sum-exp [B,K,G,T]; a query that sees nothing gets 0 (and lse +inf)."""
    seen = l > 0
    out = acc / jnp.where(seen, l, 1.0)[..., None]
    return out, jnp.where(seen, m + jnp.log(jnp.where(seen, l, 1.0)), jnp.inf)


def _segment_ranges(seg: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per row and block [B, n, size] -> the smallest and largest non-padding segment id in it."""
    real = seg > 0
    big = jnp.iinfo(jnp.int32).max
    return jnp.where(real, seg, big).min(-1), jnp.where(real, seg, 0).max(-1)


def _live_pairs(q_seg: jax.Array, kv_seg: jax.Array, bq: int, bk: int) -> jax.Array:
    """[nq, nk] True where some row's query block i may see key block j (causal and sharing a segment)."""
    nq, nk = q_seg.shape[1] // bq, kv_seg.shape[1] // bk
    qmin, qmax = _segment_ranges(q_seg.reshape(q_seg.shape[0], nq, bq))
    kmin, kmax = _segment_ranges(kv_seg.reshape(kv_seg.shape[0], nk, bk))
    overlap = jnp.any((qmin[:, :, None] <= kmax[:, None, :]) & (kmin[:, None, :] <= qmax[:, :, None]), axis=0)
    causal = (np.arange(nq)[:, None] * bq + bq - 1) >= (np.arange(nk)[None, :] * bk)
    return overlap & causal


def _bounds(live: jax.Array) -> tuple[jax.Array, jax.Array]:
    """For each row of `live`, the first live column and one past the last (0, 0 when none is)."""
    n = live.shape[1]
    any_live = live.any(axis=1)
    lo = jnp.argmax(live, axis=1)
    hi = n - jnp.argmax(live[:, ::-1], axis=1)
    return jnp.where(any_live, lo, 0), jnp.where(any_live, hi, 0)


def _to_blocks_q(x: jax.Array, n_kv: int, block: int) -> jax.Array:
    """[B,T,H,D] -> [nq, B, K, G, block, D]."""
    b, t, h, d = x.shape
    return x.reshape(b, t // block, block, n_kv, h // n_kv, d).transpose(1, 0, 3, 4, 2, 5)


def _from_blocks_q(x: jax.Array) -> jax.Array:
    """[nq, B, K, G, block, D] -> [B,T,H,D]."""
    nq, b, k, g, block, d = x.shape
    return x.transpose(1, 0, 4, 2, 3, 5).reshape(b, nq * block, k * g, d)


def _to_blocks_kv(x: jax.Array, block: int) -> jax.Array:
    """[B,S,K,D] -> [nk, B, K, block, D]."""
    b, s, k, d = x.shape
    return x.reshape(b, s // block, block, k, d).transpose(1, 0, 3, 2, 4)


def _pair_mask(q_seg_i, kv_seg_j, i, j, bq, bk):
    """[B,1,1,bq,bk] mask of one block pair: same non-padding segment, key index <= query index."""
    causal = (i * bq + jnp.arange(bq))[:, None] >= (j * bk + jnp.arange(bk))[None, :]
    same = (q_seg_i[:, :, None] == kv_seg_j[:, None, :]) & (q_seg_i > 0)[:, :, None]
    return (causal[None] & same)[:, None, None]


def _flash_forward(q, k, v, segment_ids, block):
    """Blocked forward over padded, block-aligned inputs; returns out blocks, lse blocks and the live table."""
    n_kv, d = k.shape[2], q.shape[-1]
    scale = 1.0 / math.sqrt(d)
    qb = _to_blocks_q(q * scale, n_kv, block)
    kb, vb = _to_blocks_kv(k, block), _to_blocks_kv(v, block)
    segs = segment_ids.reshape(segment_ids.shape[0], -1, block).transpose(1, 0, 2)  # [n, B, block]
    live = _live_pairs(segment_ids, segment_ids, block, block)
    lo, hi = _bounds(live)

    def q_block(i):
        qi = qb[i]
        m0 = jnp.full(qi.shape[:-1], _NEG, jnp.float32)
        init = (m0, jnp.zeros_like(m0), jnp.zeros_like(qi))

        def step(j, carry):
            def visit(carry):
                s = jnp.einsum("bkgtd,bksd->bkgts", qi, kb[j])
                return _online_update(carry, s, _pair_mask(segs[i], segs[j], i, j, block, block), vb[j])
            return jax.lax.cond(live[i, j], visit, lambda c: c, carry)

        return _finish(*jax.lax.fori_loop(lo[i], hi[i], step, init))

    out, lse = jax.lax.map(q_block, jnp.arange(qb.shape[0]))
    return out, lse, (qb, kb, vb, segs, live)


def _flash_backward(res, dout, block):
    """Gradients of the blocked attention: one pass over key blocks, recomputing each live pair's scores."""
    (qb, kb, vb, segs, live), out, lse = res
    n_kv, d = kb.shape[2], qb.shape[-1]
    scale = 1.0 / math.sqrt(d)
    dob = _to_blocks_q(dout, n_kv, block)
    delta = jnp.sum(dob * out, axis=-1)  # [nq, B, K, G, bq]
    lo, hi = _bounds(live.T)

    def kv_block(dq, j):
        kj, vj = kb[j], vb[j]

        def step(i, carry):
            def visit(carry):
                dq, dk, dv = carry
                qi, doi = qb[i], dob[i]
                s = jnp.einsum("bkgtd,bksd->bkgts", qi, kj)
                mask = _pair_mask(segs[i], segs[j], i, j, block, block)
                p = jnp.where(mask, jnp.exp(s - lse[i][..., None]), 0.0)
                dv = dv + jnp.einsum("bkgts,bkgtd->bksd", p, doi)
                ds = p * (jnp.einsum("bkgtd,bksd->bkgts", doi, vj) - delta[i][..., None])
                dq = dq.at[i].add(jnp.einsum("bkgts,bksd->bkgtd", ds, kj))
                dk = dk + jnp.einsum("bkgts,bkgtd->bksd", ds, qi)
                return dq, dk, dv
            return jax.lax.cond(live[i, j], visit, lambda c: c, carry)

        dq, dk, dv = jax.lax.fori_loop(lo[j], hi[j], step, (dq, jnp.zeros_like(kj), jnp.zeros_like(vj)))
        return dq, (dk, dv)

    dq, (dk, dv) = jax.lax.scan(kv_block, jnp.zeros_like(qb), jnp.arange(kb.shape[0]))
    dq = _from_blocks_q(dq) * scale
    b, s = dq.shape[0], dk.shape[0] * block
    dk = dk.transpose(1, 0, 3, 2, 4).reshape(b, s, n_kv, d)
    dv = dv.transpose(1, 0, 3, 2, 4).reshape(b, s, n_kv, d)
    return dq, dk, dv


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _flash(q, k, v, segment_ids, block):
    """Blocked attention over float32, block-aligned inputs (the wrapper casts and pads)."""
    return _from_blocks_q(_flash_forward(q, k, v, segment_ids, block)[0])


def _flash_fwd(q, k, v, segment_ids, block):
    out, lse, res = _flash_forward(q, k, v, segment_ids, block)
    return _from_blocks_q(out), (res, out, lse)


def _flash_bwd(block, saved, dout):
    return (*_flash_backward(saved, dout, block), None)


_flash.defvjp(_flash_fwd, _flash_bwd)


def blockwise(q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array, block: int = BLOCK) -> jax.Array:
    """Flash-style self-attention of a packed row: q [B,T,H,D], k/v [B,T,K,D], segment ids [B,T]."""
    t = q.shape[1]
    block = min(block, t)
    pad = -t % block
    if pad:  # padding queries (segment 0) see nothing and are seen by nothing
        widths = ((0, 0), (0, pad), (0, 0), (0, 0))
        q, k, v = jnp.pad(q, widths), jnp.pad(k, widths), jnp.pad(v, widths)
        segment_ids = jnp.pad(segment_ids, ((0, 0), (0, pad)))
    f32 = [x.astype(jnp.float32) for x in (q, k, v)]
    return _flash(*f32, segment_ids.astype(jnp.int32), block)[:, :t].astype(q.dtype)


def blockwise_cache(q: jax.Array, cache_k: jax.Array, cache_v: jax.Array, layer: jax.Array, positions: jax.Array,
                    segment_ids: jax.Array, block: int = CACHE_BLOCK) -> jax.Array:
    """New tokens q [B,T,H,D] attend to one layer of the cache [L,B,S,K,D], reading only the key blocks up
    to the longest live row's position (a loop with a dynamic bound): a big cache costs what its use costs."""
    _, b, s, n_kv, d = cache_k.shape
    t, h = q.shape[1], q.shape[2]
    block = min(block, s)
    real = segment_ids != 0
    needed = jnp.max(jnp.where(real, positions, -1)) + 1  # slots the live rows may see
    n_blocks = (needed + block - 1) // block
    qg = (q.astype(jnp.float32) / math.sqrt(d)).reshape(b, t, n_kv, h // n_kv, d).transpose(0, 2, 3, 1, 4)

    def step(j, carry):
        start = jnp.minimum(j * block, s - block)  # the last block may overlap the one before: mask the overlap
        kj = jax.lax.dynamic_slice(cache_k, (layer, 0, start, 0, 0), (1, b, block, n_kv, d))[0].astype(jnp.float32)
        vj = jax.lax.dynamic_slice(cache_v, (layer, 0, start, 0, 0), (1, b, block, n_kv, d))[0].astype(jnp.float32)
        slots = start + jnp.arange(block)
        mask = (slots[None, None, :] <= positions[:, :, None]) & (slots >= j * block)[None, None, :] & real[:, :, None]
        s_ = jnp.einsum("bkgtd,bskd->bkgts", qg, kj)
        return _online_update(carry, s_, mask[:, None, None], vj.transpose(0, 2, 1, 3))

    m0 = jnp.full(qg.shape[:-1], _NEG, jnp.float32)
    out, _ = _finish(*jax.lax.fori_loop(0, n_blocks, step, (m0, jnp.zeros_like(m0), jnp.zeros_like(qg))))
    return out.transpose(0, 3, 1, 2, 4).reshape(b, t, h, d).astype(q.dtype)


# ----------------------------------------------------------------------------------------------
# Platform kernels
# ----------------------------------------------------------------------------------------------


def splash(q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array, interpret: bool = False) -> jax.Array:
    """Pallas splash attention (TPU) with a causal mask and segment ids; one MQA kernel per kv head group."""
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as kernels  # heavy, TPU only
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as masks  # heavy, TPU only

    b, t, h, d = q.shape
    n_kv = k.shape[2]
    g = h // n_kv
    tile = min(SPLASH_TILE, t)
    if t % tile:
        raise ConfigError(f"model.attention: splash needs the row length ({t}) to be a multiple of {tile}")
    sizes = kernels.BlockSizes(block_q=tile, block_kv=tile, block_kv_compute=tile, block_q_dkv=tile,
                               block_kv_dkv=tile, block_kv_dkv_compute=tile, block_q_dq=tile, block_kv_dq=tile)
    kernel = kernels.make_splash_mqa(masks.MultiHeadMask([masks.CausalMask((t, t))] * g), block_sizes=sizes,
                                     head_shards=1, q_seq_shards=1, interpret=interpret)
    qg = (q / math.sqrt(d)).astype(q.dtype).reshape(b, t, n_kv, g, d).transpose(0, 2, 3, 1, 4)  # [B,K,G,T,D]
    kg, vg = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # [B,K,T,D]

    def one_group(qh, kh, vh, seg):
        return kernel(qh, kh, vh, segment_ids=kernels.SegmentIds(q=seg, kv=seg))

    per_row = jax.vmap(one_group, in_axes=(0, 0, 0, None))
    out = jax.vmap(per_row)(qg, kg, vg, segment_ids.astype(jnp.int32))  # [B,K,G,T,D]
    return out.transpose(0, 3, 1, 2, 4).reshape(b, t, h, d)


def splash_per_device(q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array,
                      interpret: bool = False) -> jax.Array:
    """splash on each device's own rows and heads of the active mesh (SPMD cannot partition a Pallas kernel).
    Heads stay whole when the mesh would split query and kv heads differently (a group must stay together)."""
    mesh = sharding.active_mesh()
    heads, kv_heads = "act_heads", "act_kv_heads"
    if mesh is not None and (sharding.logical_to_spec((heads,), q.shape[2:3], mesh)
                             != sharding.logical_to_spec((kv_heads,), k.shape[2:3], mesh)):
        heads = kv_heads = None
    q_axes, kv_axes = ("act_batch", "length", heads, "head_dim"), ("act_batch", "length", kv_heads, "head_dim")
    return sharding.per_device(functools.partial(splash, interpret=interpret), (q, k, v, segment_ids),
                               (q_axes, kv_axes, kv_axes, ("act_batch", "length")), q_axes)


def cudnn(q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array) -> jax.Array:
    """cuDNN flash attention (NVIDIA GPU): causal, with segments as a boolean mask; bfloat16/float16 only."""
    if q.dtype not in (jnp.bfloat16, jnp.float16):
        raise ConfigError(f"model.attention: cudnn needs model.dtype bfloat16 (cuDNN has no {q.dtype} flash attention)")
    same = segment_ids[:, None, :, None] == segment_ids[:, None, None, :]
    return jax.nn.dot_product_attention(q, k, v, mask=same, is_causal=True, implementation="cudnn")


# ----------------------------------------------------------------------------------------------
# The two entry points
# ----------------------------------------------------------------------------------------------


def self_attention(q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array, backend: str,
                   interpret: bool = False) -> jax.Array:
    """Attention of a packed row to itself: q [B,T,H,D], k/v [B,T,K,D], segment ids [B,T]."""
    name = resolve(backend, interpret=interpret)
    if name == "reference":
        return reference(q, k, v, segment_mask(segment_ids))
    if name == "blockwise":
        return blockwise(q, k, v, segment_ids)
    if name == "splash":
        return splash_per_device(q, k, v, segment_ids, interpret=interpret)
    return cudnn(q, k, v, segment_ids)


def cache_attention(q: jax.Array, cache_k: jax.Array, cache_v: jax.Array, layer: jax.Array, positions: jax.Array,
                    segment_ids: jax.Array, backend: str, interpret: bool = False) -> jax.Array:
    """New tokens q [B,T,H,D] at `positions` attend to layer `layer` of the cache [L,B,S,K,D], slots 0..position."""
    if resolve(backend, interpret=interpret) == "reference":
        k, v = cache_k[layer].astype(q.dtype), cache_v[layer].astype(q.dtype)
        return reference(q, k, v, cache_mask(positions, segment_ids, cache_k.shape[2]))
    return blockwise_cache(q, cache_k, cache_v, layer, positions, segment_ids)
