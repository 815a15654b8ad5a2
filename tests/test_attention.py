"""Attention backends equal the reference einsum: forward, gradients, packed rows, the cache; and bad choices fail."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from agentjax import sharding
from agentjax.configlib import ConfigError
from agentjax.model import Llama, attention, preset
from agentjax.train.config import ModelSection

RTOL = 1e-5


def _qkv(b, t, h, k, d, seed=0):
    rng = np.random.RandomState(seed)
    return tuple(jnp.asarray(rng.randn(b, t, n, d), jnp.float32) for n in (h, k, k))


def _packed_segments(t: int) -> np.ndarray:
    """Row 0: three segments and trailing padding; row 1: one segment filling the row."""
    a, b = t // 3, t // 2
    row0 = [1] * a + [2] * b + [3] * (t - a - b - 7) + [0] * 7
    return np.array([row0, [1] * t], np.int32)


def _relative_error(got, want) -> float:
    return float(jnp.max(jnp.abs(got - want)) / jnp.max(jnp.abs(want)))


def _check_against_reference(fn, t: int):
    """fn(q, k, v, segments) equals the reference on real tokens, and so do its gradients (GQA, packed rows)."""
    q, k, v = _qkv(2, t, 4, 2, 16)
    segments = jnp.asarray(_packed_segments(t))
    real = (segments > 0)[:, :, None, None]
    cotangent = jnp.asarray(np.random.RandomState(1).randn(*q.shape), jnp.float32) * real  # padding outputs unused

    def reference(q, k, v):
        return attention.reference(q, k, v, attention.segment_mask(segments))

    def candidate(q, k, v):
        return fn(q, k, v, segments)

    def value_and_grads(f):
        return jax.jit(jax.value_and_grad(lambda *a: jnp.sum(f(*a) * cotangent), argnums=(0, 1, 2)))(q, k, v)

    assert _relative_error(jax.jit(candidate)(q, k, v) * real, reference(q, k, v) * real) <= RTOL
    grads = [value_and_grads(f)[1] for f in (candidate, reference)]
    for got, want in zip(*grads):
        assert _relative_error(got, want) <= RTOL


def _check_packed_equals_unpacked(fn, t: int):
    """Two sequences packed in one row give the outputs each gives alone (padded to the row)."""
    q, k, v = _qkv(1, t, 4, 2, 16, seed=2)
    n = t // 2 - 3
    packed = np.array([[1] * n + [2] * n + [0] * (t - 2 * n)], np.int32)
    alone = np.array([[1] * n + [0] * (t - n)], np.int32)

    def shift(x):  # the second sequence moved to the front of its own row
        return jnp.concatenate([x[:, n:2 * n], x[:, :n], x[:, 2 * n:]], axis=1)

    qs, ks, vs = (jnp.concatenate([x, x, shift(x)]) for x in (q, k, v))
    out = jax.jit(fn)(qs, ks, vs, jnp.asarray(np.concatenate([packed, alone, alone])))
    np.testing.assert_allclose(out[0, :n], out[1, :n], rtol=RTOL, atol=1e-6)
    np.testing.assert_allclose(out[0, n:2 * n], out[2, :n], rtol=RTOL, atol=1e-6)


@pytest.mark.parametrize("t", [64, 150, 200])
def test_blockwise_equals_reference_forward_and_gradients(t):
    """Blockwise attention (one block, a ragged last block, several blocks) matches the einsum and its gradients."""
    _check_against_reference(attention.blockwise, t)


def test_blockwise_packed_equals_unpacked():
    """Blockwise attention keeps packed sequences apart exactly like separate rows."""
    _check_packed_equals_unpacked(attention.blockwise, 200)


def test_splash_in_interpret_mode_equals_reference_and_keeps_segments_apart():
    """Splash attention (Pallas, interpreted on CPU) matches the einsum and its gradients, and packed == unpacked."""
    def splash(q, k, v, segments):
        return attention.splash(q, k, v, segments, interpret=True)

    _check_against_reference(splash, 128)
    _check_packed_equals_unpacked(splash, 128)


def test_splash_on_a_mesh_runs_per_device_and_equals_reference():
    """On a 2 x 2 (fsdp x tensor) mesh of CPU devices splash runs in shard_map on each device's rows and heads
    (a Pallas kernel cannot be partitioned by the compiler), and forward and gradients still equal the reference."""
    mesh = sharding.make_mesh(sharding.MeshConfig(fsdp=2, tensor=2), jax.devices()[:4])

    def splash(q, k, v, segments):
        with sharding.activate(mesh):
            return attention.self_attention(q, k, v, segments, "splash", interpret=True)

    _check_against_reference(splash, 128)
    lowered = jax.jit(splash).lower(*_qkv(2, 128, 4, 2, 16), jnp.asarray(_packed_segments(128))).as_text()
    assert "shard_map" in lowered or "sdy.manual_computation" in lowered


def test_blockwise_visits_only_block_pairs_the_mask_leaves():
    """Causal masking and segment boundaries empty block pairs; the blockwise loop is told to skip them."""
    segments = jnp.asarray(np.repeat(np.arange(1, 5), 64)[None].astype(np.int32))  # four segments of one block each
    np.testing.assert_array_equal(attention._live_pairs(segments, segments, 64, 64), np.eye(4, dtype=bool))
    one = jnp.ones((1, 256), jnp.int32)
    np.testing.assert_array_equal(attention._live_pairs(one, one, 64, 64), np.tril(np.ones((4, 4), bool)))


def test_blockwise_memory_grows_linearly_in_length():
    """XLA's temporary memory for forward + backward doubles (not quadruples) from 1,024 to 2,048 tokens."""
    def temp_bytes(fn, t):
        q, k, v = (jax.ShapeDtypeStruct((1, t, 4, 32), jnp.float32) for _ in range(3))
        segments = jax.ShapeDtypeStruct((1, t), jnp.int32)
        grad = jax.grad(lambda q, k, v, s: jnp.sum(fn(q, k, v, s)), argnums=(0, 1, 2))
        return jax.jit(grad).lower(q, k, v, segments).compile().memory_analysis().temp_size_in_bytes

    def reference(q, k, v, s):
        return attention.reference(q, k, v, attention.segment_mask(s))

    assert temp_bytes(attention.blockwise, 2048) / temp_bytes(attention.blockwise, 1024) < 2.5
    assert temp_bytes(reference, 2048) / temp_bytes(reference, 1024) > 3.5  # the dense oracle is quadratic


def test_cache_loop_equals_reference_over_the_cache():
    """The bounded cache loop (rows at different lengths, a cache that is not a multiple of its block) matches the einsum."""
    rng = np.random.RandomState(3)
    cache_k, cache_v = (jnp.asarray(rng.randn(2, 3, 70, 2, 16), jnp.float32) for _ in range(2))
    q = jnp.asarray(rng.randn(3, 5, 4, 16), jnp.float32)
    positions = jnp.asarray([[0, 1, 2, 0, 0], [30, 31, 32, 33, 34], [65, 66, 67, 68, 69]], jnp.int32)
    segments = jnp.asarray([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1]], jnp.int32)
    real = (segments > 0)[:, :, None, None]
    want = attention.cache_attention(q, cache_k, cache_v, 1, positions, segments, "reference")
    got = attention.blockwise_cache(q, cache_k, cache_v, jnp.int32(1), positions, segments, block=32)
    assert _relative_error(got * real, want * real) <= RTOL


def test_models_with_each_portable_backend_agree_on_logits_gradients_and_cache():
    """A tiny Llama gives the same logits and gradients with reference and blockwise attention, in the full
    forward of a packed batch and through the cache."""
    tokens = np.random.RandomState(4).randint(1, 300, (2, 40)).astype(np.int32)
    segments = np.array([[1] * 15 + [2] * 20 + [0] * 5, [1] * 40], np.int32)
    positions = np.array([list(range(15)) + list(range(20)) + [0] * 5, list(range(40))], np.int32)
    results = {}
    for backend in ("reference", "blockwise"):
        model = Llama(preset("tiny", vocab_size=300, attention=backend), rngs=nnx.Rngs(0))
        graphdef, params = nnx.split(model)

        def loss(params):
            logits = nnx.merge(graphdef, params)(tokens, positions, segments)
            return jnp.sum(jnp.where(segments[..., None] > 0, logits, 0.0) ** 2) / 1e4

        logits = nnx.jit(lambda m: m(tokens, positions, segments))(model)
        grads = jax.jit(jax.grad(loss))(params)
        cached, _ = nnx.jit(lambda m: m.extend(m.init_cache(2, 48), tokens, positions, segments))(model)
        results[backend] = logits, grads, cached
    real = segments[..., None] > 0
    (ref_logits, ref_grads, ref_cached), (logits, grads, cached) = results["reference"], results["blockwise"]
    assert _relative_error(jnp.where(real, logits, 0), jnp.where(real, ref_logits, 0)) <= RTOL
    for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
        assert _relative_error(got, want) <= RTOL
    assert _relative_error(cached[1], ref_cached[1]) <= RTOL  # the unpacked row, extended into the cache


def test_backend_choice_by_platform_and_clear_errors():
    """`auto` picks the backend for the platform; a backend the platform lacks is a config error naming those it has;
    `model.attention` in a run config reaches the model and an unknown name is refused there."""
    assert {attention.resolve("auto", p) for p in ("cpu", "tpu", "gpu")} == {"blockwise"}  # kernels opt-in for now
    assert attention.resolve("splash", "tpu") == "splash" and attention.resolve("cudnn", "gpu") == "cudnn"
    assert attention.resolve("splash", "cpu", interpret=True) == "splash"
    for name in ("splash", "cudnn"):
        with pytest.raises(ConfigError, match=r"does not run on cpu; available there: \['auto', 'reference', 'blockwise'\]"):
            attention.resolve(name, "cpu")
    model = Llama(preset("tiny", attention="cudnn"), rngs=nnx.Rngs(0))
    with pytest.raises(ConfigError, match="cudnn"):
        model(np.ones((1, 8), np.int32))
    with pytest.raises(ConfigError, match="model.attention: 'flash' is not one of"):
        ModelSection(preset="tiny", attention="flash").resolve()
    assert ModelSection(preset="tiny", attention="reference").resolve().attention == "reference"
