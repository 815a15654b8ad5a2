"""Llama in Flax NNX: RMSNorm, half-split RoPE, grouped-query attention, SwiGLU; layers scanned.

Read top to bottom: the config and presets, the building blocks, one decoder block, the model.
Every parameter carries logical axis names (`axes` metadata); agentjax.sharding maps them to a mesh.
Attention is causal within a segment and never crosses segments (segment id 0 = padding), so packed
rows behave exactly like separate sequences. The same layers serve the full forward (training) and
the cached forward (prefill and decode), which writes keys/values at each token's position.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx
from jax.experimental.layout import Layout, with_layout_constraint

from agentjax.configlib import ConfigError, ConfigSection, from_dict
from agentjax.model.attention import cache_attention, self_attention
from agentjax.sharding import constrain

# ----------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RopeScaling(ConfigSection):
    """RoPE frequency scaling for long contexts (Llama 3.1 `llama3` type, or plain `linear`)."""

    kind: Literal["llama3", "linear"] = "llama3"
    factor: float = 8.0  # how much longer than pre-training the context may be
    low_freq_factor: float = 1.0  # llama3: wavelengths above original/low_freq_factor are divided by factor
    high_freq_factor: float = 4.0  # llama3: wavelengths below original/high_freq_factor are kept
    original_max_position: int = 8192  # llama3: the context length of pre-training


@dataclass(frozen=True)
class LlamaConfig(ConfigSection):
    """Shape and numerics of a Llama model. YAML may name a `preset` and override any field."""

    vocab_size: int = 32000  # tokens in the vocabulary (rows of the embedding)
    dim: int = 4096  # width of the residual stream (HF hidden_size)
    n_layers: int = 32  # decoder blocks, stacked and run with scan
    n_heads: int = 32  # query heads
    n_kv_heads: int = 32  # key/value heads; fewer than n_heads means grouped-query attention
    head_dim: int = 128  # width of one attention head
    mlp_dim: int = 11008  # hidden width of the SwiGLU MLP (HF intermediate_size)
    norm_eps: float = 1e-5  # RMSNorm epsilon
    rope_theta: float = 10000.0  # RoPE base wavelength
    rope_scaling: RopeScaling | None = None  # long-context frequency scaling (Llama 3.1)
    max_seq_len: int = 4096  # longest sequence the model is meant to see (training rows, KV cache)
    tie_embeddings: bool = False  # reuse the token embedding as the output projection
    param_dtype: Literal["float32", "bfloat16"] = "float32"  # storage dtype of parameters
    dtype: Literal["float32", "bfloat16"] = "float32"  # compute dtype of activations and matmuls
    remat: Literal["none", "minimal", "full"] = "full"  # what a layer keeps for the backward pass
    attention: Literal["auto", "reference", "blockwise", "splash", "cudnn"] = "auto"  # backend (model/attention.py)
    init_std: float = 0.02  # std of the normal initialiser for random initialisation

    @classmethod
    def from_mapping(cls, data: dict, where: str) -> dict:
        """Expand `preset: NAME` into that preset's fields; explicit keys override them."""
        name = data.pop("preset", None)
        if name is None:
            return data
        if name not in PRESETS:
            raise ConfigError(f"{where}.preset: unknown preset {name!r}; known: {sorted(PRESETS)}")
        return {**PRESETS[name], **data}

    def validate(self):
        if self.n_heads % self.n_kv_heads:
            raise ConfigError(f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.n_kv_heads})")
        if self.head_dim % 2:
            raise ConfigError(f"head_dim ({self.head_dim}) must be even for RoPE")

    def replace(self, **changes) -> "LlamaConfig":
        return dataclasses.replace(self, **changes)

    @property
    def n_params(self) -> int:
        """Parameter count (embeddings included)."""
        attn = self.dim * self.head_dim * (2 * self.n_heads + 2 * self.n_kv_heads)
        layer = attn + 3 * self.dim * self.mlp_dim + 2 * self.dim
        head = 0 if self.tie_embeddings else self.vocab_size * self.dim
        return self.n_layers * layer + self.vocab_size * self.dim + head + self.dim


_LLAMA2 = dict(vocab_size=32000, head_dim=128, norm_eps=1e-5, rope_theta=10000.0, max_seq_len=4096)
_LLAMA3 = dict(vocab_size=128256, head_dim=128, norm_eps=1e-5, rope_theta=500000.0, max_seq_len=8192)

PRESETS: dict[str, dict] = {
    "llama2-7b": dict(_LLAMA2, dim=4096, n_layers=32, n_heads=32, n_kv_heads=32, mlp_dim=11008),
    "llama2-13b": dict(_LLAMA2, dim=5120, n_layers=40, n_heads=40, n_kv_heads=40, mlp_dim=13824),
    "llama2-70b": dict(_LLAMA2, dim=8192, n_layers=80, n_heads=64, n_kv_heads=8, mlp_dim=28672),
    "llama3-8b": dict(_LLAMA3, dim=4096, n_layers=32, n_heads=32, n_kv_heads=8, mlp_dim=14336),
    "llama3.1-8b": dict(
        _LLAMA3, dim=4096, n_layers=32, n_heads=32, n_kv_heads=8, mlp_dim=14336, max_seq_len=131072,
        rope_scaling=dict(kind="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                          original_max_position=8192),
    ),
    # SmolLM2-135M(-Instruct)'s shapes, for compiling and sizing without its weights (they come from its GGUF).
    "smollm2-135m": dict(vocab_size=49152, dim=576, n_layers=30, n_heads=9, n_kv_heads=3, head_dim=64, mlp_dim=1536,
                         norm_eps=1e-5, rope_theta=100000.0, max_seq_len=8192, tie_embeddings=True),
    # Small sizes for tests, the CPU quickstart and benchmarks.
    "tiny": dict(vocab_size=512, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16, mlp_dim=128,
                 max_seq_len=512, remat="none"),
    "small": dict(vocab_size=2048, dim=256, n_layers=4, n_heads=4, n_kv_heads=2, head_dim=64, mlp_dim=704,
                  max_seq_len=1024, remat="none"),
    "100m": dict(vocab_size=32000, dim=768, n_layers=12, n_heads=12, n_kv_heads=12, head_dim=64, mlp_dim=2048,
                 max_seq_len=2048, remat="none"),
}


def preset(name: str, **overrides) -> LlamaConfig:
    """A preset config with some fields changed, e.g. `preset("tiny", n_layers=8)`."""
    return from_dict(LlamaConfig, {"preset": name, **overrides})


# ----------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------


def _param(rngs: nnx.Rngs, shape, axes, dtype, std: float | None) -> nnx.Param:
    """A parameter with logical axis names; normal(std) initialised, or ones when std is None."""
    value = jnp.ones(shape, dtype) if std is None else std * jax.random.normal(rngs.params(), shape, dtype)
    return nnx.Param(value, axes=tuple(axes))


class Dense(nnx.Module):
    """A linear map from the trailing `in_shape` dims of x to `out_shape` dims (no bias)."""

    def __init__(self, in_shape, out_shape, axes, cfg: LlamaConfig, *, rngs: nnx.Rngs):
        self.in_shape, self.out_shape = tuple(in_shape), tuple(out_shape)
        self.dtype = jnp.dtype(cfg.dtype)
        self.kernel = _param(rngs, self.in_shape + self.out_shape, axes, jnp.dtype(cfg.param_dtype), cfg.init_std)
        self.frozen = False  # set by LoRA: the kernel gets no gradient, so it is read in its stored layout

    def __call__(self, x: jax.Array, dropout_key: jax.Array | None = None) -> jax.Array:
        """`dropout_key` serves LoRA adapters (model/lora.py); a plain projection has no dropout."""
        kernel = stored_layout(self.kernel[...]) if self.frozen else self.kernel[...]
        return contract(x, kernel, len(self.in_shape), self.dtype)


def stored_layout(kernel: jax.Array) -> jax.Array:
    """The kernel read in the row-major layout it is stored in. Left free with no gradient to compute, the TPU
    compiler gives the layer scan's frozen q/k/v kernels another layout and copies each whole stack into it
    (0.1 GiB a 7B layer: LoRA on one v5e chip fits or not); with gradients, its own choice uses less memory."""
    return with_layout_constraint(kernel, Layout(tuple(range(kernel.ndim))))


def contract(x: jax.Array, kernel: jax.Array, n_in: int, dtype) -> jax.Array:
    """x[..., *in] @ kernel[*in, *out] in the compute dtype."""
    contracting = (tuple(range(x.ndim - n_in, x.ndim)), tuple(range(n_in)))
    return jax.lax.dot_general(x.astype(dtype), kernel.astype(dtype), (contracting, ((), ())))


class RMSNorm(nnx.Module):
    """Root-mean-square norm computed in float32, scaled by a learned vector."""

    def __init__(self, cfg: LlamaConfig, *, rngs: nnx.Rngs):
        self.eps = cfg.norm_eps
        self.dtype = jnp.dtype(cfg.dtype)
        self.scale = _param(rngs, (cfg.dim,), ("norm",), jnp.dtype(cfg.param_dtype), None)

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return self.scale[...].astype(self.dtype) * x32.astype(self.dtype)


def rope_frequencies(cfg: LlamaConfig) -> jax.Array:
    """Inverse frequencies of the rotary embedding [head_dim/2], with Llama 3.1 or linear scaling."""
    inv_freq = 1.0 / cfg.rope_theta ** (jnp.arange(0, cfg.head_dim, 2, dtype=jnp.float32) / cfg.head_dim)
    s = cfg.rope_scaling
    if s is None:
        return inv_freq
    if s.kind == "linear":
        return inv_freq / s.factor
    wavelen = 2 * math.pi / inv_freq
    low_freq_wavelen = s.original_max_position / s.low_freq_factor
    high_freq_wavelen = s.original_max_position / s.high_freq_factor
    scaled = jnp.where(wavelen > low_freq_wavelen, inv_freq / s.factor, inv_freq)
    smooth = (s.original_max_position / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor)
    smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled
    medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
    return jnp.where(medium, smoothed, scaled)


def apply_rope(x: jax.Array, positions: jax.Array, inv_freq: jax.Array) -> jax.Array:
    """Rotate x [B,T,H,D] by its positions [B,T], Hugging Face half-split layout (pairs i, i+D/2)."""
    angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [B,T,D/2]
    angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]
    x32 = x.astype(jnp.float32)
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x32[..., half:], x32[..., :half]], axis=-1)
    return (x32 * jnp.cos(angles) + rotated * jnp.sin(angles)).astype(x.dtype)


def split_key(key: jax.Array | None, n: int) -> list:
    """n dropout keys, or n Nones when there is no dropout (inference)."""
    return [None] * n if key is None else list(jax.random.split(key, n))


# ----------------------------------------------------------------------------------------------
# One decoder block
# ----------------------------------------------------------------------------------------------


class KVCache(NamedTuple):
    """Keys and values of every layer, slot = token position: [layers, batch, max_len, kv_heads, head_dim]."""

    k: jax.Array
    v: jax.Array

    @property
    def max_len(self) -> int:
        return self.k.shape[2]


CACHE_AXES = ("layers", "act_batch", "cache_len", "act_kv_heads", "head_dim")


class CacheView(NamedTuple):
    """The cache of all layers as the layer scan carries it, which layer is running, and where new tokens go.

    Carrying the whole cache (rather than scanning over its layers) lets XLA write the new keys and
    values in place: a decode step then touches only what attention reads, not a copy of the cache.
    """

    kv: KVCache
    layer: jax.Array  # scalar index of the running layer
    slots: jax.Array  # [B, T] cache slot of each new token; out of range (padding) is not written

    def write(self, k: jax.Array, v: jax.Array) -> "CacheView":
        """Store this chunk's keys/values [B,T,K,D] at their slots; return the new view."""
        rows = jnp.arange(k.shape[0])[:, None]
        ck = self.kv.k.at[self.layer, rows, self.slots].set(k.astype(self.kv.k.dtype), mode="drop")
        cv = self.kv.v.at[self.layer, rows, self.slots].set(v.astype(self.kv.v.dtype), mode="drop")
        return self._replace(kv=KVCache(ck, cv))


class Attention(nnx.Module):
    """Self-attention with RoPE and grouped-query heads; optionally reads and writes a KV cache."""

    def __init__(self, cfg: LlamaConfig, *, rngs: nnx.Rngs):
        d, h, k, hd = cfg.dim, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.q_proj = Dense((d,), (h, hd), ("embed", "heads", "head_dim"), cfg, rngs=rngs)
        self.k_proj = Dense((d,), (k, hd), ("embed", "kv_heads", "head_dim"), cfg, rngs=rngs)
        self.v_proj = Dense((d,), (k, hd), ("embed", "kv_heads", "head_dim"), cfg, rngs=rngs)
        self.o_proj = Dense((h, hd), (d,), ("heads", "head_dim", "embed"), cfg, rngs=rngs)
        self.backend = cfg.attention

    def __call__(self, x, positions, segment_ids, inv_freq, cache: CacheView | None = None, key=None):
        kq, kk, kv, ko = split_key(key, 4)
        q = constrain(apply_rope(self.q_proj(x, kq), positions, inv_freq), ("act_batch", "length", "act_heads", "head_dim"))
        k = constrain(apply_rope(self.k_proj(x, kk), positions, inv_freq), ("act_batch", "length", "act_kv_heads", "head_dim"))
        v = constrain(self.v_proj(x, kv), ("act_batch", "length", "act_kv_heads", "head_dim"))
        if cache is None:
            out = self_attention(q, k, v, segment_ids, self.backend)
        else:  # write this chunk's keys/values at their positions, then attend over the cache
            cache = cache.write(k, v)
            out = cache_attention(q, cache.kv.k, cache.kv.v, cache.layer, positions, segment_ids, self.backend)
        return self.o_proj(out, ko), cache


class MLP(nnx.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, cfg: LlamaConfig, *, rngs: nnx.Rngs):
        self.gate_proj = Dense((cfg.dim,), (cfg.mlp_dim,), ("embed", "mlp"), cfg, rngs=rngs)
        self.up_proj = Dense((cfg.dim,), (cfg.mlp_dim,), ("embed", "mlp"), cfg, rngs=rngs)
        self.down_proj = Dense((cfg.mlp_dim,), (cfg.dim,), ("mlp", "embed"), cfg, rngs=rngs)

    def __call__(self, x, key=None):
        kg, ku, kd = split_key(key, 3)
        h = constrain(jax.nn.silu(self.gate_proj(x, kg)) * self.up_proj(x, ku), ("act_batch", "length", "act_mlp"))
        return self.down_proj(h, kd)


class Block(nnx.Module):
    """Pre-norm decoder block: x + attn(norm(x)), then + mlp(norm(x))."""

    def __init__(self, cfg: LlamaConfig, *, rngs: nnx.Rngs):
        self.input_norm = RMSNorm(cfg, rngs=rngs)
        self.attn = Attention(cfg, rngs=rngs)
        self.post_attn_norm = RMSNorm(cfg, rngs=rngs)
        self.mlp = MLP(cfg, rngs=rngs)

    def __call__(self, x, positions, segment_ids, inv_freq, cache: CacheView | None = None, key=None):
        k_attn, k_mlp = split_key(key, 2)
        h, cache = self.attn(self.input_norm(x), positions, segment_ids, inv_freq, cache, k_attn)
        x = x + h
        x = x + self.mlp(self.post_attn_norm(x), k_mlp)
        return constrain(x, ("act_batch", "length", "act_embed")), cache


REMAT_POLICIES = {
    "minimal": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,  # keep matmul outputs
    "full": jax.checkpoint_policies.nothing_saveable,  # recompute the whole block
}


def stacked_blocks(cfg: LlamaConfig, rngs: nnx.Rngs) -> Block:
    """A Block whose every parameter has a leading `layers` axis of size n_layers."""
    keys = jax.random.split(rngs.params(), cfg.n_layers)
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: Block(cfg, rngs=nnx.Rngs(0))))
    state = jax.vmap(lambda key: nnx.split(Block(cfg, rngs=nnx.Rngs(params=key)))[1])(keys)
    stacked = jax.tree.map(
        lambda v: v.replace(axes=("layers",) + v.get_metadata()["axes"]),
        state, is_leaf=lambda x: isinstance(x, nnx.Variable),
    )
    return nnx.merge(graphdef, stacked)


# ----------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------


class Llama(nnx.Module):
    """Token embedding, n_layers scanned blocks, final norm and output projection."""

    def __init__(self, cfg: LlamaConfig, *, rngs: nnx.Rngs):
        self.config = cfg
        self.embed = _param(rngs, (cfg.vocab_size, cfg.dim), ("vocab", "embed"), jnp.dtype(cfg.param_dtype), cfg.init_std)
        self.layers = stacked_blocks(cfg, rngs)
        self.norm = RMSNorm(cfg, rngs=rngs)
        self.lm_head = None if cfg.tie_embeddings else Dense((cfg.dim,), (cfg.vocab_size,), ("embed", "vocab"), cfg, rngs=rngs)

    def __call__(self, tokens, positions=None, segment_ids=None, *, dropout_key=None) -> jax.Array:
        """Logits [B,T,V] (float32). Defaults: one unpadded sequence per row. `dropout_key`: LoRA dropout."""
        return self.logits(self.features(tokens, positions, segment_ids, dropout_key=dropout_key))

    def features(self, tokens, positions=None, segment_ids=None, *, dropout_key=None, frozen_layers: int = 0) -> jax.Array:
        """The normalised final hidden states [B,T,D] that the output projection (`head_kernel`) turns into logits.
        `frozen_layers`: the first blocks (and the embedding lookup) run outside differentiation, so a gradient
        neither reaches them nor pays for their backward."""
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
        if segment_ids is None:
            segment_ids = jnp.ones_like(tokens)
        x, _ = self._run_layers(self._embed(tokens), positions, segment_ids, dropout_key=dropout_key,
                                frozen_layers=frozen_layers)
        return self.norm(x)

    def init_cache(self, batch: int, max_len: int) -> KVCache:
        """An empty KV cache with room for `max_len` positions per row."""
        cfg = self.config
        shape = (cfg.n_layers, batch, max_len, cfg.n_kv_heads, cfg.head_dim)
        return KVCache(constrain(jnp.zeros(shape, cfg.dtype), CACHE_AXES), constrain(jnp.zeros(shape, cfg.dtype), CACHE_AXES))

    def extend(self, cache: KVCache, tokens, positions, segment_ids) -> tuple[jax.Array, KVCache]:
        """Run new tokens [B,T] at `positions`, writing their keys/values into the cache at those slots.

        Serves prefill (many tokens) and decode (one token); rows may carry different numbers of new
        tokens: padding (segment id 0) writes nothing. Returns logits [B,T,V] and the new cache.
        """
        features, cache = self.extend_features(cache, tokens, positions, segment_ids)
        return self.logits(features), cache

    def extend_features(self, cache: KVCache, tokens, positions, segment_ids) -> tuple[jax.Array, KVCache]:
        """`extend`, returning the final features [B,T,D] instead of logits (a caller that needs few logits)."""
        write_slots = jnp.where(segment_ids != 0, positions, cache.max_len)  # out of range: dropped
        x, cache = self._run_layers(self._embed(tokens), positions, segment_ids, cache, write_slots)
        return self.norm(x), cache

    def _embed(self, tokens):
        x = jnp.take(self.embed[...], tokens, axis=0).astype(self.config.dtype)
        return constrain(x, ("act_batch", "length", "act_embed"))

    def head_kernel(self) -> jax.Array:
        """The output projection [D,V]: the token embedding transposed when tied."""
        return self.embed[...].T if self.lm_head is None else self.lm_head.kernel[...]

    def logits(self, features: jax.Array) -> jax.Array:
        """Float32 logits [B,T,V] of normalised hidden states [B,T,D]."""
        logits = contract(features, self.head_kernel(), 1, features.dtype)
        return constrain(logits.astype(jnp.float32), ("act_batch", "length", "act_vocab"))

    def _run_layers(self, x, positions, segment_ids, cache: KVCache | None = None, write_slots=None, dropout_key=None,
                    frozen_layers: int = 0):
        """Scan the stacked blocks over x (and the cache); the layer body is compiled once whatever the depth.
        Blocks held one by one (`unstack_layers`) run as straight-line code instead. The first `frozen_layers`
        blocks run as a scan of their own on stopped gradients (training only)."""
        inv_freq = rope_frequencies(self.config)
        if isinstance(self.layers, nnx.List):
            for index, block in enumerate(self.layers):
                view = None if cache is None else CacheView(cache, index, write_slots)
                x, view = block(x, positions, segment_ids, inv_freq, view)
                cache = None if view is None else view.kv
            return x, cache
        graphdef, params = nnx.split(self.layers)
        keys = None if dropout_key is None else jax.random.split(dropout_key, self.config.n_layers)

        def body(carry, layer):
            x, kv = carry
            layer_params, index, key = layer
            view = None if kv is None else CacheView(kv, index, write_slots)
            x, view = nnx.merge(graphdef, layer_params)(x, positions, segment_ids, inv_freq, view, key)
            return (x, None if view is None else view.kv), None

        if self.config.remat != "none":
            body = jax.checkpoint(body, policy=REMAT_POLICIES[self.config.remat], prevent_cse=False)
        layers = (params, jnp.arange(self.config.n_layers), keys)
        if frozen_layers:
            if cache is not None or not 0 < frozen_layers < self.config.n_layers:
                raise ValueError(f"frozen_layers={frozen_layers}: needs no cache and 0 < frozen_layers < "
                                 f"n_layers ({self.config.n_layers})")
            below = jax.tree.map(lambda a: jax.lax.stop_gradient(a[:frozen_layers]), layers)
            (x, _), _ = jax.lax.scan(body, (jax.lax.stop_gradient(x), None), below)
            layers = jax.tree.map(lambda a: a[frozen_layers:], layers)
        (x, cache), _ = jax.lax.scan(body, (x, cache), layers)
        return x, cache


def unstack_layers(model: Llama) -> Llama:
    """The model with its blocks held one by one (nnx.List) rather than stacked, for inference.

    A scan over stacked weights copies each layer's slice out of the stack on every call (XLA:CPU
    materialises the dynamic slice): in a decode step that copy of all the weights costs more than the
    matmuls. Unstacked, every block reads its own arrays. The program grows with the depth instead.
    """
    if isinstance(model.layers, nnx.List):
        return model
    graphdef, stacked = nnx.split(model.layers)

    def layer(i):
        return jax.tree.map(lambda v: v.replace(v[...][i], axes=v.get_metadata()["axes"][1:]), stacked,
                            is_leaf=lambda x: isinstance(x, nnx.Variable))

    unstacked = nnx.merge(nnx.graphdef(model), nnx.state(model))
    unstacked.layers = nnx.List([nnx.merge(graphdef, layer(i)) for i in range(model.config.n_layers)])
    return unstacked


def in_compute_dtype(model: Llama) -> Llama:
    """The model with its floating-point weights stored in the compute dtype (`dtype`), for inference.

    Every layer casts its weights to `dtype` before using them, so the outputs are the same bit for bit; but a
    decode loop over float32 masters holds a cast copy of all of them beside the masters (XLA hoists the
    loop-invariant cast), and these weights take half the memory to begin with.
    """
    dtype = jnp.dtype(model.config.dtype)
    if jnp.dtype(model.config.param_dtype) == dtype:
        return model
    graphdef, state = nnx.split(model)
    state = jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, state)
    model = nnx.merge(graphdef, state)
    model.config = model.config.replace(param_dtype=model.config.dtype)
    return model
