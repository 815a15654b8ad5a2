"""Contracts 2 and 3 for the model: packed == unpacked, cached == full forward, sharded == single device."""

import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from agentjax import sharding
from agentjax.model import Llama, preset
from agentjax.model.llama import in_compute_dtype

CFG = preset("tiny", vocab_size=300)


@pytest.fixture(scope="module")
def model():
    return Llama(CFG, rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def forward():
    return nnx.jit(lambda m, t, p, s: m(t, positions=p, segment_ids=s))


def _tokens(*shape, seed=0):
    return np.random.RandomState(seed).randint(1, CFG.vocab_size, shape).astype(np.int32)


def test_packed_row_equals_separate_sequences(model, forward):
    """Two sequences packed in one row (segment ids, restarting positions) give each one's own logits."""
    a, b = _tokens(1, 7, seed=1), _tokens(1, 5, seed=2)
    packed = np.concatenate([a, b, np.zeros((1, 4), np.int32)], axis=1)
    positions = np.concatenate([np.arange(7), np.arange(5), np.zeros(4)])[None].astype(np.int32)
    segments = np.array([[1] * 7 + [2] * 5 + [0] * 4], np.int32)
    got = np.asarray(forward(model, packed, positions, segments))
    alone_a = np.asarray(model(a))
    alone_b = np.asarray(model(b))
    np.testing.assert_allclose(got[:, :7], alone_a, atol=1e-5)
    np.testing.assert_allclose(got[:, 7:12], alone_b, atol=1e-5)
    assert np.isfinite(got).all()  # padding rows attend to nothing but must not produce NaN


def test_padding_does_not_change_real_tokens(model, forward):
    """Trailing padding (segment id 0) leaves real tokens' logits unchanged."""
    real = _tokens(2, 6, seed=3)
    padded = np.concatenate([real, _tokens(2, 10, seed=4)], axis=1)
    segments = np.concatenate([np.ones((2, 6)), np.zeros((2, 10))], axis=1).astype(np.int32)
    positions = np.broadcast_to(np.arange(16), (2, 16)).astype(np.int32)
    got = np.asarray(forward(model, padded, positions, segments))
    np.testing.assert_allclose(got[:, :6], np.asarray(model(real)), atol=1e-5)


def test_segments_do_not_leak(model, forward):
    """Changing the first packed sequence does not change the second one's logits."""
    row = _tokens(1, 12, seed=5)
    other = row.copy()
    other[0, :6] = _tokens(1, 6, seed=6)
    positions = np.array([list(range(6)) * 2], np.int32)
    segments = np.array([[1] * 6 + [2] * 6], np.int32)
    x = np.asarray(forward(model, row, positions, segments))
    y = np.asarray(forward(model, other, positions, segments))
    np.testing.assert_allclose(x[:, 6:], y[:, 6:], atol=1e-6)
    assert np.abs(x[:, :6] - y[:, :6]).max() > 1e-3  # and the first sequence did change


@nnx.jit
def _extend(model, cache, tokens, positions, segments):
    return model.extend(cache, tokens, positions, segments)


def test_cached_decoding_equals_full_forward(model):
    """Prefill prefixes of different lengths per row, then decode token by token: logits equal the full forward."""
    total, prefix = 20, np.array([5, 9, 1])
    seqs = _tokens(3, total, seed=7)
    full = np.asarray(model(seqs))
    cache = model.init_cache(3, 32)
    width = prefix.max()
    tokens = np.where(np.arange(width) < prefix[:, None], seqs[:, :width], 0)
    positions = np.broadcast_to(np.arange(width), (3, width)).astype(np.int32)
    segments = (np.arange(width) < prefix[:, None]).astype(np.int32)
    logits, cache = _extend(model, cache, tokens, positions, segments)
    for row, n in enumerate(prefix):
        np.testing.assert_allclose(np.asarray(logits)[row, :n], full[row, :n], atol=1e-5)
    pos = prefix.copy()
    for _ in range(total - prefix.max()):
        step_tokens = seqs[np.arange(3), pos][:, None]
        logits, cache = _extend(model, cache, step_tokens, pos[:, None].astype(np.int32), np.ones((3, 1), np.int32))
        np.testing.assert_allclose(np.asarray(logits)[:, 0], full[np.arange(3), pos], atol=1e-5)
        pos += 1


def test_rewinding_the_cache_overwrites_stale_slots(model):
    """After writing junk past a row's end, continuing from the earlier position gives clean logits."""
    seqs = _tokens(1, 10, seed=8)
    full = np.asarray(model(seqs))
    cache = model.init_cache(1, 16)
    ones = np.ones((1, 10), np.int32)
    _, cache = _extend(model, cache, _tokens(1, 10, seed=9), np.arange(10)[None].astype(np.int32), ones)
    _, cache = _extend(model, cache, seqs[:, :4], np.arange(4)[None].astype(np.int32), ones[:, :4])
    logits, _ = _extend(model, cache, seqs[:, 4:], np.arange(4, 10)[None].astype(np.int32), ones[:, 4:])
    np.testing.assert_allclose(np.asarray(logits), full[:, 4:], atol=1e-5)


def test_sharded_equals_single_device_and_params_are_sharded(model):
    """On a 2x2x2 mesh of 8 fake devices the logits match one device, and weights are split as the rules say."""
    assert jax.device_count() == 8, "tests run with 8 fake CPU devices (tests/conftest.py)"
    mesh = sharding.make_mesh(sharding.MeshConfig(data=2, fsdp=2, tensor=2))
    sharded = sharding.create_sharded(lambda: Llama(CFG, rngs=nnx.Rngs(0)), mesh)
    spec = lambda a: tuple(a.sharding.spec)  # noqa: E731
    assert spec(sharded.layers.attn.q_proj.kernel[...]) == (None, "fsdp", "tensor", None)
    assert spec(sharded.layers.attn.o_proj.kernel[...]) == (None, "tensor", None, "fsdp")
    assert spec(sharded.layers.mlp.down_proj.kernel[...]) == (None, "tensor", "fsdp")
    assert spec(sharded.embed[...]) == ("tensor", "fsdp")
    q = sharded.layers.attn.q_proj.kernel[...]
    assert q.addressable_shards[0].data.shape == (CFG.n_layers, CFG.dim // 2, CFG.n_heads // 2, CFG.head_dim)
    tokens = _tokens(4, 16, seed=10)
    with sharding.activate(mesh):
        got = nnx.jit(lambda m, t: m(t))(sharded, tokens)
    assert got.sharding.spec[0] == ("data", "fsdp")  # activations are batch-sharded over data and fsdp
    np.testing.assert_allclose(np.asarray(got), np.asarray(model(tokens)), atol=1e-5)


def test_logical_axis_rules_replicate_what_does_not_divide():
    """A dimension the mesh axis does not divide is replicated rather than failing."""
    mesh = sharding.make_mesh(sharding.MeshConfig(data=1, fsdp=2, tensor=4))
    assert tuple(sharding.logical_to_spec(("embed", "kv_heads"), (64, 2), mesh)) == ("fsdp", None)
    assert tuple(sharding.logical_to_spec(("act_batch", "length"), (6, 8), mesh)) == ("fsdp", None)


def _compile_seconds(n_layers: int) -> float:
    cfg = preset("tiny", n_layers=n_layers, remat="full")
    abstract = nnx.eval_shape(lambda: Llama(cfg, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)

    def loss(state, tokens):
        return nnx.merge(graphdef, state)(tokens).mean()

    tokens = jax.ShapeDtypeStruct((2, 32), jnp.int32)
    t0 = time.perf_counter()
    jax.jit(jax.grad(loss)).lower(state, tokens).compile()
    return time.perf_counter() - t0


def test_compile_time_is_flat_in_depth():
    """Scanned layers: compiling forward+backward of 8 layers takes under 2x the time of 2 layers."""
    _compile_seconds(3)  # warm up the compiler's own caches
    two, eight = _compile_seconds(2), _compile_seconds(8)
    print(f"compile 2 layers {two:.2f}s, 8 layers {eight:.2f}s")
    assert eight < 2 * two


def test_weights_in_the_compute_dtype_give_the_same_logits_bit_for_bit():
    """Every layer casts its weights to `dtype` first, so storing them in it (what evaluation decodes with)
    changes no output of a float32-master, bfloat16-compute model, and halves what the weights take."""
    model = Llama(preset("tiny", dtype="bfloat16", param_dtype="float32"), rngs=nnx.Rngs(3))
    tokens = _tokens(2, 12, seed=4)
    expected = np.asarray(model(tokens))
    cast = in_compute_dtype(model)
    assert {x.dtype for x in jax.tree.leaves(nnx.state(cast, nnx.Param))} == {jnp.dtype("bfloat16")}
    assert cast.config.param_dtype == "bfloat16"
    np.testing.assert_array_equal(np.asarray(cast(tokens)), expected)
