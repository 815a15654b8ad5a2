"""The decoder: stop strings caught however tokens split them, sampling settings, greedy determinism."""

import itertools
import random

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from agentjax import sharding
from agentjax.agent.decode import (CALL_COST_TOKENS, EOS, MAX_TOKENS, STOP_STRING, Decoder, Sampling, append_and_match,
                                   chunk_width, put_rows, stop_tables, take_rows)
from agentjax.agent.loop import cut_at_stop
from agentjax.model import Llama, preset
from agentjax.model.llama import CACHE_AXES
from agentjax.perf import CompileCounter

STOP = "\nObservation:"
TEXT = "Action: search[x]" + STOP + " y"


class ChunkTokenizer:
    """A tokenizer over arbitrary byte chunks: token i spells CHUNKS[i] (token 0 spells nothing)."""

    def __init__(self, chunks):
        self.chunks = [b""] + list(chunks)
        self.vocab_size = len(self.chunks)

    def token_bytes(self, i):
        return self.chunks[i]


def _splits(text: bytes, rng: random.Random):
    """Every split into 3 tokens at two cut points, plus random splits into 1-4 byte tokens."""
    n = len(text)
    for i, j in itertools.combinations(range(1, n), 2):
        yield [text[:i], text[i:j], text[j:]]
    for _ in range(200):
        cuts, at = [], 0
        while at < n:
            step = rng.randint(1, 4)
            cuts.append(text[at: at + step])
            at += step
        yield cuts


def test_stop_string_is_caught_wherever_tokens_split_it():
    """For hundreds of tokenisations, the match fires exactly at the token that completes the stop string."""
    text = TEXT.encode()
    splits = list(_splits(text, random.Random(0)))
    chunks = sorted({c for s in splits for c in s})
    index = {c: i + 1 for i, c in enumerate(chunks)}
    tables = stop_tables(ChunkTokenizer(chunks), len(chunks) + 1, (STOP, "never seen"))
    longest = max(map(len, splits))
    tokens = np.zeros((len(splits), longest), np.int32)
    expected = np.zeros(len(splits), np.int32)
    end = text.index(STOP.encode()) + len(STOP)
    for row, split in enumerate(splits):
        tokens[row, : len(split)] = [index[c] for c in split]
        expected[row] = np.searchsorted(np.cumsum([len(c) for c in split]), end)  # token holding the last stop byte
    step = jax.jit(append_and_match)
    window = jnp.zeros((len(splits), tables.window), jnp.uint8)
    first = np.full(len(splits), -1)
    for t in range(longest):
        window, matched = step(window, jnp.asarray(tokens[:, t]), tables)
        first = np.where((first < 0) & np.asarray(matched), t, first)
    np.testing.assert_array_equal(first, expected)


def test_nothing_after_the_stop_string_is_kept():
    """The reply is cut at the earliest stop string; text after it is dropped."""
    assert cut_at_stop("Thought: a\nAction: b[c]\nObservation: d\nThought:", ("\nObservation:",)) == "Thought: a\nAction: b[c]"
    assert cut_at_stop("x [INST] y <|user|>", ("<|user|>", "[INST]")) == "x "
    assert cut_at_stop("no stop here", ("\nObservation:",)) == "no stop here"


@pytest.fixture(scope="module")
def model(tok):
    return Llama(preset("tiny", vocab_size=tok.vocab_size), rngs=nnx.Rngs(3))


def _prompt(tok, decoder, text="Question: who founded the city?\n"):
    cache, logits = decoder.new_state()
    ids = [tok.bos_id] + tok.encode(text)
    cache, logits = decoder.extend(cache, logits, [ids] * decoder.batch, [0] * decoder.batch)
    return cache, logits, len(ids)


_DECODERS = {}


def _decoder(tok, model, stops) -> Decoder:
    """One compiled decoder per stop-string set, shared by the tests."""
    if stops not in _DECODERS:
        _DECODERS[stops] = Decoder(model, tok, stops, batch=2, max_len=128, max_new_tokens=40, buckets=(16,))
    return _DECODERS[stops]


def _generate(tok, model, stops, sampling, max_new=40):
    decoder = _decoder(tok, model, stops)
    cache, logits, n = _prompt(tok, decoder)
    out = decoder.decode(cache, logits, np.full(2, n), np.ones(2, bool), sampling, jax.random.key(0), max_new)
    return jax.device_get((out.tokens, out.count, out.reason))


def test_decoder_stops_on_a_stop_string_spanning_several_tokens(tok, model):
    """A stop string made of the tail of one generated token through the head of a later one ends the row there."""
    tokens, count, reason = _generate(tok, model, (), [Sampling()] * 2)
    pieces = [tok.token_bytes(t) for t in tokens[0, : count[0]]]
    stop = next(text for i in range(len(pieces) - 2) if (text := _valid_text(pieces[i][-1:] + pieces[i + 1] + pieces[i + 2][:1]))
                and pieces[i + 1] and max(len(pieces[i]), len(pieces[i + 2])) > 1)  # starts or ends inside a token
    stream = b"".join(pieces)
    expected = np.searchsorted(np.cumsum([len(p) for p in pieces]), stream.index(stop.encode()) + len(stop.encode()))
    tokens2, count2, reason2 = _generate(tok, model, (stop,), [Sampling()] * 2)
    assert count2[0] == expected + 1 and reason2[0] == STOP_STRING
    np.testing.assert_array_equal(tokens2[0, : count2[0]], tokens[0, : count2[0]])  # same text up to the stop


def test_a_reply_continued_by_a_second_decode_is_the_reply_of_one(tok, model):
    """A decode that returns early (row 0 ends at its budget, `min_stopped`=1) leaves row 1 mid-reply; resumed with
    the returned cache, logits and text window it generates the one-call reply token for token, and a stop string
    that began before the break still ends it at the same token."""
    tokens, count, _ = _generate(tok, model, (), [Sampling()] * 2)
    pieces = [tok.token_bytes(t) for t in tokens[1, : count[1]]]
    i = next(i for i in range(2, len(pieces) - 2) if pieces[i] and pieces[i + 1] and pieces[i + 2]
             and _valid_text(pieces[i] + pieces[i + 1] + pieces[i + 2]))
    stop = _valid_text(pieces[i] + pieces[i + 1] + pieces[i + 2])
    assert stop not in b"".join(pieces[: i + 2]).decode("utf-8", "replace")
    one, n1, reason1 = _generate(tok, model, (stop,), [Sampling()] * 2)
    decoder = _decoder(tok, model, (stop,))
    cache, logits, n = _prompt(tok, decoder)
    first = decoder.decode(cache, logits, np.full(2, n), np.ones(2, bool), [Sampling()] * 2, jax.random.key(0),
                           np.array([i + 2, 40]), min_stopped=1)  # returns with the stop string begun, not ended
    assert list(first.count) == [i + 2, i + 2] and list(first.reason) == [MAX_TOKENS, 0]
    rest = decoder.decode(first.cache, first.logits, np.array([0, n + i + 2]), np.array([False, True]),
                          [Sampling()] * 2, first.key, 40 - (i + 2), window=first.window, resume=np.array([False, True]))
    joined = np.concatenate([np.asarray(first.tokens)[1, : i + 2], np.asarray(rest.tokens)[1, : rest.count[1]]])
    assert rest.reason[1] == reason1[1] == STOP_STRING
    np.testing.assert_array_equal(joined, one[1, : n1[1]])


def _valid_text(raw: bytes) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def test_greedy_rows_ignore_their_neighbours_settings_and_nothing_recompiles(tok, model):
    """Rows sample with their own settings (greedy stays greedy beside a hot row); new settings compile nothing."""
    greedy, _, _ = _generate(tok, model, (), [Sampling()] * 2)
    decoder = _decoder(tok, model, ())
    cache, logits, n = _prompt(tok, decoder)
    out = decoder.decode(cache, logits, np.full(2, n), np.ones(2, bool), [Sampling(), Sampling(1.0, 50, 0.9)],
                         jax.random.key(1))
    cache, logits, n = _prompt(tok, decoder)
    with CompileCounter() as compiles:
        again = decoder.decode(cache, logits, np.full(2, n), np.ones(2, bool),
                               [Sampling(0.7, 5, 0.5), Sampling()], jax.random.key(2))
    assert compiles.count == 0
    np.testing.assert_array_equal(np.asarray(out.tokens)[0], greedy[0])
    np.testing.assert_array_equal(np.asarray(again.tokens)[1], greedy[1])
    assert not np.array_equal(np.asarray(out.tokens)[1], greedy[1])  # the hot row did sample


def test_top_k_of_one_and_a_tiny_top_p_are_greedy(tok, model):
    """Temperature with top_k=1, or with top_p near 0, can only pick the argmax."""
    greedy, _, _ = _generate(tok, model, (), [Sampling()] * 2)
    filtered, _, _ = _generate(tok, model, (), [Sampling(2.0, 1, 1.0), Sampling(2.0, 0, 1e-6)])
    np.testing.assert_array_equal(filtered, greedy)


def test_budget_ends_rows(tok, model):
    """A row stops at its token budget and nothing is generated past it."""
    tokens, count, reason = _generate(tok, model, (), [Sampling()] * 2, max_new=7)
    assert list(count) == [7, 7] and set(reason) == {MAX_TOKENS}
    assert (tokens[:, 7:] == tok.pad_id).all()


def test_eos_or_a_template_s_end_of_turn_token_ends_a_row(tok, model):
    """The tokens that end a reply are the tokenizer's EOS and the template's end_ids (a chat format's <|im_end|> or
    <|eot_id|>); when the model emits one the row stops at once and reports EOS (here: the model's first greedy token)."""
    first = int(_generate(tok, model, (), [Sampling()] * 2)[0][0, 0])
    assert first != tok.eos_id
    decoder = Decoder(model, tok, (), batch=2, max_len=128, max_new_tokens=40, buckets=(16,), end_ids=(first,))
    assert sorted(decoder.end_ids.tolist()) == sorted({tok.eos_id, first})
    cache, logits, n = _prompt(tok, decoder)
    out = decoder.decode(cache, logits, np.full(2, n), np.ones(2, bool), [Sampling()] * 2, jax.random.key(0))
    assert list(out.count) == [1, 1] and set(np.asarray(out.reason)) == {EOS}


def test_warm_up_compiles_every_program_a_loop_calls(tok, model):
    """After warm_up, extends of each bucket and decodes chained on the key a decode returned compile nothing."""
    decoder = Decoder(model, tok, (), batch=2, max_len=128, max_new_tokens=8, buckets=(16, 64))
    cache, logits = decoder.warm_up(*decoder.new_state())
    key = jax.random.key(0)
    with CompileCounter() as compiles:
        cache, logits = decoder.extend(cache, logits, [[5] * 40, [6] * 3], [0, 0])
        for _ in range(2):  # the first reply gets a fresh key, the next ones the key the previous decode returned
            out = decoder.decode(cache, logits, np.array([40, 3]), np.ones(2, bool), [Sampling()] * 2, key)
            cache, key = out.cache, out.key
    assert compiles.count == 0


def test_a_model_sharded_over_every_device_decodes_on_its_own_mesh(tok, model):
    """A model whose parameters are fsdp-sharded over all 8 devices (as load_trained_model places them) decodes with
    the default mesh, which is the parameters' own, and greedily gives the single-device model's tokens."""
    mesh = sharding.make_mesh()
    assert mesh.devices.size == 8
    sharded = sharding.create_sharded(lambda: Llama(preset("tiny", vocab_size=tok.vocab_size), rngs=nnx.Rngs(3)), mesh)
    decoder = Decoder(sharded, tok, (), batch=2, max_len=128, max_new_tokens=40, buckets=(16,))
    assert decoder.mesh == mesh
    cache, logits, n = _prompt(tok, decoder)
    out = decoder.decode(cache, logits, np.full(2, n), np.ones(2, bool), [Sampling()] * 2, jax.random.key(0))
    np.testing.assert_array_equal(np.asarray(out.tokens), _generate(tok, model, (), [Sampling()] * 2)[0])


def test_chunk_widths_never_cost_more_than_padding_to_one_bucket():
    """The series of widths chunk_width picks for any length up to 600 covers it and costs (width + fixed cost per
    call) no more than one call padded to the smallest bucket that holds it, or the widest bucket's chunks."""
    buckets = (16, 64, 256)
    for call_cost in (CALL_COST_TOKENS, CALL_COST_TOKENS / 8):
        for length in range(1, 601):
            left, cost = length, 0.0
            while left > 0:
                width = chunk_width(left, buckets, call_cost)
                left, cost = left - width, cost + call_cost + width
            whole = -(-length // 256) * (call_cost + 256) if length > 64 else call_cost + next(
                b for b in buckets if b >= length)
            assert cost <= whole, (length, call_cost)


def test_a_tool_turn_goes_in_the_cheapest_widths_and_matches_the_full_forward(tok, model):
    """One row's 80-token turn runs as a 64-wide then a 16-wide extend, not padded to 256 (a call's fixed cost is
    ~40 tokens' compute, so 296 -> 160); a 200-token one as one 256-wide call. The logits equal the forward's."""
    decoder = Decoder(model, tok, (), batch=1, max_len=384, max_new_tokens=8, buckets=(16, 64, 256))
    widths, run_chunk = [], decoder._extend_chunk
    decoder._extend_chunk = lambda cache, logits, rows, tokens, *rest: (
        widths.append(tokens.shape[1]) or run_chunk(cache, logits, rows, tokens, *rest))
    rng = np.random.RandomState(1)
    seq = list(rng.randint(3, tok.vocab_size, 80))
    cache, logits = decoder.extend(*decoder.new_state(), [seq], [0])
    assert widths == [64, 16]
    turn = list(rng.randint(3, tok.vocab_size, 200))
    cache, logits = decoder.extend(cache, logits, [turn], [len(seq)])
    assert widths == [64, 16, 256]
    np.testing.assert_allclose(np.asarray(logits)[0], np.asarray(model(jnp.array([seq + turn])))[0, -1],
                               rtol=2e-4, atol=2e-4)


def test_extending_a_few_rows_runs_only_them_and_matches_the_full_forward(tok, model):
    """Rows with input are gathered into a small program (a new episode's prompt does not pay for the batch; up
    to half the batch runs in its groups); a long input beside a short one goes in chunks of the short one's
    width. Each row's logits equal the model's forward over that row's whole sequence; rows given nothing keep
    their logits and cache bit for bit."""
    decoder = Decoder(model, tok, (), batch=8, max_len=256, max_new_tokens=8, buckets=(16, 64))
    assert decoder.programs.row_buckets == (1, 8)
    rng = np.random.RandomState(0)
    seqs = [list(rng.randint(3, tok.vocab_size, 5 + r)) for r in range(8)]  # one 16-wide pass of all rows
    cache, logits = decoder.extend(*decoder.new_state(), seqs, [0] * 8)
    before_k, before_logits = np.asarray(cache.k), np.asarray(logits)

    extra = {5: list(rng.randint(3, tok.vocab_size, 100))}  # one row: the gathered one-row program
    assert decoder.programs.extend_rows[1]._cache_size() == 0
    cache, logits = decoder.extend(cache, logits, [extra.get(r, []) for r in range(8)], [len(s) for s in seqs])
    assert decoder.programs.extend_rows[1]._cache_size() > 0
    untouched = [r for r in range(8) if r not in extra]
    np.testing.assert_array_equal(np.asarray(logits)[untouched], before_logits[untouched])
    np.testing.assert_array_equal(np.asarray(cache.k)[:, untouched], before_k[:, untouched])
    seqs[5] = seqs[5] + extra[5]
    more = {r: list(rng.randint(3, tok.vocab_size, n)) for r, n in ((0, 4), (1, 1), (2, 3), (6, 40), (5, 2))}
    # five rows: the whole batch, 16 wide, row 6 in chunks; row 5 reads what the one-row program wrote
    cache, logits = decoder.extend(cache, logits, [more.get(r, []) for r in range(8)], [len(s) for s in seqs])
    for r, tokens in more.items():
        seqs[r] = seqs[r] + tokens
    for r in range(8):
        expected = np.asarray(model(jnp.array([seqs[r]])))[0, -1]
        np.testing.assert_allclose(np.asarray(logits)[r], expected, rtol=2e-4, atol=2e-4)


def test_a_few_live_rows_decode_gathered_as_the_full_batch_would(tok, model):
    """When a quarter of the batch or less is live (an evaluation's last episodes), the decode loop runs on those
    rows gathered: the tokens, stop reasons, logits and cache rows equal the full-batch loop's, and the idle rows'
    cache and logits are left bit for bit."""
    decoder = Decoder(model, tok, (), batch=16, max_len=128, max_new_tokens=12, buckets=(16,))
    assert sorted(decoder.programs.decode_rows) == [4]
    cache, logits, n = _prompt(tok, decoder)
    live = np.zeros(16, bool)
    live[[1, 6, 15]] = True
    lengths, budget = np.full(16, n), np.array([12] * 15 + [5])
    args = (np.asarray(lengths, np.int32), live, np.zeros(16, bool), budget.astype(np.int32),
            np.zeros(16, np.float32), np.zeros(16, np.int32), np.ones(16, np.float32),
            np.asarray(jax.random.key_data(jax.random.key(0))), np.int32(16))
    window = np.zeros((16, decoder.tables.window), np.uint8)
    full = decoder.programs.decode(decoder.params, decoder.tables, jax.tree.map(jnp.copy, cache), logits, window, *args)
    full = jax.device_get(full)
    before_k, before_logits = np.asarray(cache.k), np.asarray(logits)
    with CompileCounter() as compiles:
        gathered = jax.device_get(decoder.decode(cache, logits, lengths, live, [Sampling()] * 16, jax.random.key(0),
                                                 budget))
    assert compiles.count == 1  # the gathered loop, not the full one (already compiled above)
    assert list(gathered.count[[1, 6, 15]]) == [12, 12, 5] and gathered.count.sum() == 29
    for field in ("tokens", "count", "reason"):
        np.testing.assert_array_equal(getattr(gathered, field), getattr(full, field))
    np.testing.assert_allclose(gathered.logits, full.logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gathered.cache.k, full.cache.k, rtol=1e-5, atol=1e-6)
    idle = ~live
    np.testing.assert_array_equal(gathered.cache.k[:, idle], before_k[:, idle])
    np.testing.assert_array_equal(gathered.logits[idle], before_logits[idle])


def test_cache_rows_on_a_mesh_move_on_the_devices_holding_them(tok, model):
    """On a mesh splitting the cache's rows over fsdp (and its kv heads over tensor), taking and putting a few rows
    give numpy's answer (a padding index reads zeros and writes nothing) without gathering the cache: the program
    has no all-gather and its temporaries are smaller than one device's share of the cache (SPMD's own dynamic
    slice across shards gathered the whole cache on every device: 16 GiB on a v4-8 for a 4 GiB share).
    A Decoder's row copy on such a mesh equals the copy numpy makes."""
    mesh = sharding.make_mesh(sharding.MeshConfig(fsdp=4, tensor=2))
    shape = (2, 16, 16, 4, 8)  # 4 rows a device
    cache = np.random.RandomState(0).randn(*shape).astype(np.float32)
    placed = jax.device_put(cache, sharding.named_sharding(CACHE_AXES, shape, mesh))
    rows, values = np.array([13, 1, 16], np.int32), np.ones((2, 3, 16, 4, 8), np.float32)

    def take(c, rows):
        with sharding.activate(mesh):
            return take_rows(c, rows)

    def put(c, rows, v):
        with sharding.activate(mesh):
            return put_rows(c, rows, v)

    taken = np.asarray(jax.jit(take)(placed, rows))
    np.testing.assert_array_equal(taken[:, :2], cache[:, [13, 1]])
    np.testing.assert_array_equal(taken[:, 2], 0)
    expected = cache.copy()
    expected[:, [13, 1]] = 1
    np.testing.assert_array_equal(np.asarray(jax.jit(put)(placed, rows, values)), expected)
    share = cache.nbytes // 8
    for fn, args in ((take, (placed, rows)), (put, (placed, rows, values))):
        compiled = jax.jit(fn, donate_argnums=0).lower(*args).compile()
        assert "all-gather" not in compiled.as_text()
        assert compiled.memory_analysis().temp_size_in_bytes < share

    sharded = sharding.create_sharded(lambda: Llama(preset("tiny", vocab_size=tok.vocab_size), rngs=nnx.Rngs(3)),
                                      sharding.make_mesh())
    decoder = Decoder(sharded, tok, (), batch=8, max_len=64, max_new_tokens=4, buckets=(16,))
    rng = np.random.RandomState(1)
    cache, logits = decoder.extend(*decoder.new_state(), [list(rng.randint(3, tok.vocab_size, 9)) for _ in range(8)],
                                   [0] * 8)
    before = np.array(cache.v)
    copied = np.asarray(decoder.copy_rows(cache, [0, 5], [7, 2]).v)
    before[:, [7, 2]] = before[:, [0, 5]]
    np.testing.assert_array_equal(copied, before)
