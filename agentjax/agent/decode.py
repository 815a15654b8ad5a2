"""On-device generation: a jitted extend (append tokens to each row's KV cache) and a jitted decode loop.

The decode loop is one `lax.while_loop`: sample (greedy, temperature, top-k, top-p: per-row settings
passed as arrays, so changing them never recompiles), stop a row on EOS, on a stop string, on its
token budget, at the end of its cache, or on a template's end-of-turn token. Stop strings are matched on the generated *bytes* (each
token's bytes from the tokenizer), so a stop string split across tokens in any way is caught. A
row's last sampled token is never written to the cache; the caller decides what the cache should
continue with (see agent/loop.py, which re-renders the turn with the training template).

The loop may return before every row is done (`min_stopped`): the rows left running keep their cache, logits
and recent text, and the next call continues them (`resume`) exactly where they were, while the rows that
stopped take their next input in between (continuous batching: no row idles until the batch's longest reply ends).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from agentjax import sharding
from agentjax.data.tokenizer import Tokenizer
from agentjax.model.llama import CACHE_AXES, KVCache, Llama, unstack_layers

# Why a row stopped.
RUNNING, EOS, STOP_STRING, MAX_TOKENS, CONTEXT_FULL = 0, 1, 2, 3, 4
STOP_REASONS = {EOS: "eos", STOP_STRING: "stop_string", MAX_TOKENS: "max_tokens", CONTEXT_FULL: "context_full"}
DEFAULT_BUCKETS = (16, 64, 256)  # extend widths compiled; longer inputs go in chunks
# What one extend call costs beyond its tokens, in tokens of one row's compute: on XLA:CPU a matmul over few rows runs
# far below peak (100m, batch 1: a 16/64/256-token extend took 133/218/602 ms at 256 tokens of context and
# 194/365/1062 at 2,048, ~90-135 ms a call plus ~2.0-3.6 ms a token; a plain 16/64/256-token forward, no cache,
# 151/233/665 ms; busy machine, whatever the cache length).
CALL_COST_TOKENS = 40


@dataclass(frozen=True)
class Sampling:
    """Per-row sampling settings; temperature 0 is greedy, top_k 0 and top_p 1 switch those filters off."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0


class StopTables(NamedTuple):
    """Token bytes and stop strings as padded arrays, for matching text on device."""

    token_bytes: jax.Array  # uint8 [V, Lmax]
    token_lens: jax.Array  # int32 [V]
    stops: jax.Array  # uint8 [S, Smax]
    stop_lens: jax.Array  # int32 [S]

    @property
    def window(self) -> int:
        """Bytes of recent text kept per row: enough for a stop string ending anywhere in a new token."""
        return self.stops.shape[1] + self.token_bytes.shape[1]


def stop_tables(tokenizer: Tokenizer, vocab_size: int, stop_strings: tuple[str, ...]) -> StopTables:
    pieces = [tokenizer.token_bytes(i) if i < tokenizer.vocab_size else b"" for i in range(vocab_size)]
    width = max(1, max(map(len, pieces)))
    table = np.zeros((vocab_size, width), np.uint8)
    for i, p in enumerate(pieces):
        table[i, : len(p)] = np.frombuffer(p, np.uint8)
    encoded = [s.encode() for s in stop_strings] or [b""]
    if any(b"\x00" in s for s in encoded):
        raise ValueError("stop strings may not contain NUL bytes")
    stops = np.zeros((len(encoded), max(1, max(map(len, encoded)))), np.uint8)
    for i, s in enumerate(encoded):
        stops[i, : len(s)] = np.frombuffer(s, np.uint8)
    return StopTables(jnp.asarray(table), jnp.asarray([len(p) for p in pieces], jnp.int32), jnp.asarray(stops),
                      jnp.asarray([len(s) for s in encoded], jnp.int32))


def append_and_match(window: jax.Array, token: jax.Array, tables: StopTables) -> tuple[jax.Array, jax.Array]:
    """Append each row's token bytes to its text window [B, W]; True where a stop string now ends."""
    b, w = window.shape
    new = tables.token_bytes[token]  # [B, Lmax]
    n = tables.token_lens[token]  # [B]
    joined = jnp.concatenate([window, new], axis=1)
    window = jnp.take_along_axis(joined, n[:, None] + jnp.arange(w)[None], axis=1)
    lmax, smax = tables.token_bytes.shape[1], tables.stops.shape[1]
    ends = w - 1 - jnp.arange(lmax)  # candidate end positions of a match inside the new bytes
    starts = ends[None, :] - tables.stop_lens[:, None] + 1  # [S, Lmax]
    idx = starts[:, :, None] + jnp.arange(smax)[None, None, :]  # [S, Lmax, Smax]
    text = window[:, jnp.clip(idx, 0, w - 1)]  # [B, S, Lmax, Smax]
    in_stop = jnp.arange(smax)[None, None, :] < tables.stop_lens[:, None, None]
    equal = jnp.all((text == tables.stops[:, None, :][None]) | ~in_stop[None], axis=-1)  # [B, S, Lmax]
    fresh = jnp.arange(lmax)[None, :] < n[:, None]  # [B, Lmax]: only ends inside this token's bytes count
    valid = (tables.stop_lens > 0)[None, :, None]
    return window, jnp.any(equal & fresh[:, None, :] & valid, axis=(1, 2))


def sample(logits: jax.Array, key: jax.Array, temperature: jax.Array, top_k: jax.Array, top_p: jax.Array) -> jax.Array:
    """One token per row from logits [B, V] with that row's temperature / top-k / top-p."""
    greedy = jnp.argmax(logits, axis=-1).astype(jnp.int32)

    def stochastic(_):
        scaled = logits / jnp.maximum(temperature, 1e-6)[:, None]
        ranked = -jnp.sort(-scaled, axis=-1)  # descending
        rank = jnp.arange(logits.shape[-1])[None, :]
        ranked = jnp.where((top_k[:, None] > 0) & (rank >= top_k[:, None]), -jnp.inf, ranked)
        probs = jax.nn.softmax(ranked, axis=-1)
        mass_before = jnp.cumsum(probs, axis=-1) - probs
        keep = (mass_before < top_p[:, None]) & jnp.isfinite(ranked)
        cutoff = jnp.min(jnp.where(keep, ranked, jnp.inf), axis=-1, keepdims=True)
        filtered = jnp.where(scaled >= cutoff, scaled, -jnp.inf)
        drawn = jax.random.categorical(key, filtered, axis=-1).astype(jnp.int32)
        return jnp.where(temperature > 0, drawn, greedy)

    return jax.lax.cond(jnp.all(temperature <= 0), lambda _: greedy, stochastic, None)


class Generated(NamedTuple):
    tokens: jax.Array  # int32 [B, max_new] this call's tokens
    count: jax.Array  # int32 [B] tokens generated by this call (a stopped row's last one was not written to the cache)
    reason: jax.Array  # int32 [B] STOP_REASONS, or RUNNING for a row left mid-reply (all its tokens are in the cache)
    cache: KVCache
    logits: jax.Array  # [B, V] the next-token logits of the rows left running
    window: jax.Array  # uint8 [B, W] each row's recent text, so a continued reply still catches a stop string
    key: jax.Array


class DecodePrograms:
    """The jitted programs of one model shape, batch, cache length and reply budget, with explicit shardings.

    `new_state(params)`, `extend(params, cache, logits, tokens, positions, segments)` (all rows),
    `extend_rows[n](params, cache, logits, rows, tokens, positions, segments)` (n of the rows, gathered: a prompt
    for one new episode costs what one row costs, not the batch) and
    `decode(params, tables, cache, logits, window, lengths, active, resume, budget, temperature, top_k, top_p,
    key_data, min_stopped)` (with `decode_rows[n](..., rows)` its loop over n gathered rows, on a CPU) are what a
    Decoder runs; `abstract_inputs` gives their arguments as shapes, so they can be compiled ahead of time
    for a slice (agentjax.aot) from an abstract model. The cache is sharded by CACHE_AXES, rows over the batch axes.
    """

    def __init__(self, graphdef, params, cfg, batch: int, max_len: int, max_new: int, end_ids: np.ndarray,
                 pad_id: int, mesh):
        self.graphdef, self.cfg, self.mesh = graphdef, cfg, mesh
        self.batch, self.max_len, self.max_new, self.end_ids, self.pad_id = batch, max_len, max_new, end_ids, pad_id
        self.params_shardings = sharding.state_shardings(params, mesh)
        replicated = NamedSharding(mesh, PartitionSpec())
        cache = sharding.named_sharding(CACHE_AXES, self.cache_shape, mesh)
        self.cache_shardings = KVCache(cache, cache)
        self.logits_sharding = sharding.named_sharding(("act_batch", "act_vocab"), (batch, cfg.vocab_size), mesh)
        rows = sharding.named_sharding(("act_batch",), (batch,), mesh)
        rows2 = sharding.named_sharding(("act_batch", "length"), (batch, 1), mesh)
        self.window_sharding = rows2  # as a decode returns it: a fresh window is placed so, or the loop compiles twice
        state_out = (self.cache_shardings, self.logits_sharding)
        self.new_state = jax.jit(self._new_state_impl, in_shardings=(self.params_shardings,), out_shardings=state_out)
        self.extend = jax.jit(self._extend_impl, in_shardings=(self.params_shardings, *state_out, rows2, rows2, rows2),
                              out_shardings=state_out, donate_argnums=(1,))
        self.row_buckets = extend_row_buckets(batch)
        self.extend_rows = {}
        for n in self.row_buckets[:-1]:
            some = sharding.named_sharding(("act_batch", "length"), (n, 1), mesh)
            self.extend_rows[n] = jax.jit(
                self._extend_rows_impl, in_shardings=(self.params_shardings, *state_out, replicated, some, some, some),
                out_shardings=state_out, donate_argnums=(1,))
        self.copy_rows = {}
        for n in self.row_buckets:
            some = sharding.named_sharding(("act_batch",), (n,), mesh)
            self.copy_rows[n] = jax.jit(self._copy_rows_impl, in_shardings=(self.cache_shardings, replicated, some),
                                        out_shardings=self.cache_shardings, donate_argnums=(0,))
        decode_in = (self.params_shardings, replicated, *state_out, rows2, *[rows] * 7, replicated, replicated)
        decode_out = Generated(rows2, rows, rows, *state_out, rows2, replicated)
        self.decode = jax.jit(self._decode_impl, donate_argnums=(2,), in_shardings=decode_in,
                              out_shardings=decode_out)
        self.decode_rows = {
            n: jax.jit(self._decode_rows_impl, donate_argnums=(2,), in_shardings=(*decode_in, replicated),
                       out_shardings=decode_out)
            for n in decode_row_buckets(batch, mesh.devices.flat[0].platform)}

    @property
    def cache_shape(self) -> tuple[int, ...]:
        return (self.cfg.n_layers, self.batch, self.max_len, self.cfg.n_kv_heads, self.cfg.head_dim)

    def abstract_inputs(self, params, tables: StopTables, buckets: tuple[int, ...]) -> dict[str, tuple]:
        """program name -> (jitted function, its arguments as ShapeDtypeStructs): each extend bucket and the loop."""
        def spec(shape, dtype, where):
            return jax.ShapeDtypeStruct(shape, dtype, sharding=where)

        b, i32 = self.batch, jnp.int32
        params = jax.tree.map(lambda p, s: spec(p.shape, p.dtype, s), params, self.params_shardings)
        cache = KVCache(*(spec(self.cache_shape, self.cfg.dtype, s) for s in self.cache_shardings))
        logits = spec((b, self.cfg.vocab_size), jnp.float32, self.logits_sharding)
        programs = {}
        for width in buckets:
            tokens = jax.ShapeDtypeStruct((b, width), i32)
            programs[f"extend {width}"] = (self.extend, (params, cache, logits, tokens, tokens, tokens))
            for n, program in self.extend_rows.items():
                tokens = jax.ShapeDtypeStruct((n, width), i32)
                programs[f"extend {n} rows {width}"] = (program, (params, cache, logits, jax.ShapeDtypeStruct((n,), i32),
                                                                  tokens, tokens, tokens))
        window = spec((b, tables.window), jnp.uint8, self.window_sharding)
        for n, program in self.copy_rows.items():
            rows = jax.ShapeDtypeStruct((n,), i32)
            programs[f"copy {n} rows"] = (program, (cache, rows, rows))
        rows = [jax.ShapeDtypeStruct((b,), t) for t in (i32, bool, bool, i32, jnp.float32, i32, jnp.float32)]
        key_data = jax.ShapeDtypeStruct(jax.random.key_data(jax.random.key(0)).shape, jnp.uint32)
        decode_args = (params, tables, cache, logits, window, *rows, key_data, jax.ShapeDtypeStruct((), i32))
        programs["decode loop"] = (self.decode, decode_args)
        for n, program in self.decode_rows.items():
            programs[f"decode loop {n} rows"] = (program, (*decode_args, jax.ShapeDtypeStruct((n,), i32)))
        return programs

    def _new_state_impl(self, params):
        cache = nnx.merge(self.graphdef, params).init_cache(self.batch, self.max_len)
        return cache, jnp.zeros((self.batch, self.cfg.vocab_size), jnp.float32)

    def _extend_impl(self, params, cache, logits, tokens, positions, segments):
        model = nnx.merge(self.graphdef, params)
        features, cache = model.extend_features(cache, tokens, positions, segments)
        n = segments.sum(axis=1)
        last = jnp.take_along_axis(features, jnp.maximum(n - 1, 0)[:, None, None], axis=1)  # only its logits are needed
        return cache, jnp.where((n > 0)[:, None], model.logits(last)[:, 0], logits)

    def _extend_rows_impl(self, params, cache, logits, rows, tokens, positions, segments):
        """`extend` of the cache rows `rows` only (an index >= batch is padding): gather them, extend, put back."""
        gathered = KVCache(*(take_rows(c, rows) for c in cache))
        gathered, new = self._extend_impl(params, gathered, jnp.take(logits, rows, axis=0, mode="clip"), tokens,
                                          positions, segments)
        cache = KVCache(*(put_rows(c, rows, g) for c, g in zip(cache, gathered)))
        return cache, logits.at[rows].set(new, mode="drop")

    def _copy_rows_impl(self, cache, sources, targets):
        """Cache row sources[i] copied onto row targets[i] (an index >= batch is padding; no target is a source): a
        shared prompt's keys and values are computed once. The slots after the shared part are overwritten before
        anything reads them. One row at a time, so the temporaries hold a row, not the batch (FireAct's eval on
        v4-8, copy 16 rows: 24 GiB of temporaries in one go, 0.5 a row)."""
        def copy_one(i, cache):
            source, target = (jax.lax.dynamic_slice_in_dim(r, i, 1) for r in (sources, targets))
            return KVCache(*(put_rows(c, target, take_rows(c, source)) for c in cache))

        return jax.lax.fori_loop(0, sources.shape[0], copy_one, cache)

    def _decode_rows_impl(self, params, tables, cache, logits, window, lengths, active, resume, budget,
                          temperature, top_k, top_p, key_data, min_stopped, rows):
        """`decode` of the cache rows `rows` only (an index >= batch is padding, never active): a loop step then
        costs what the live rows cost, not the batch (the rows left when an evaluation's queue runs dry)."""
        take = lambda x: jnp.take(x, rows, axis=0, mode="clip")  # noqa: E731
        live = take(active) & (rows < self.batch)
        out = self._decode_impl(params, tables, KVCache(*(take_rows(c, rows) for c in cache)), take(logits),
                                take(window), take(lengths), live, take(resume), take(budget), take(temperature),
                                take(top_k), take(top_p), key_data, min_stopped)
        put = lambda full, part: full.at[rows].set(part, mode="drop")  # noqa: E731
        b = self.batch
        return Generated(
            put(jnp.full((b, self.max_new), self.pad_id, jnp.int32), out.tokens), put(jnp.zeros(b, jnp.int32), out.count),
            put(jnp.zeros(b, jnp.int32), out.reason), KVCache(*(put_rows(c, rows, g) for c, g in zip(cache, out.cache))),
            put(logits, out.logits), put(window, out.window), out.key)

    def _decode_impl(self, params, tables, cache, logits, window, lengths, active, resume, budget, temperature,
                     top_k, top_p, key_data, min_stopped):
        """Generate for the `active` rows until `min_stopped` of them have stopped (or all): row r may make up to
        budget[r] tokens, its next position being lengths[r]; `resume` rows continue the text in `window`."""
        model = nnx.merge(self.graphdef, params)
        key = jax.random.wrap_key_data(key_data)
        b = lengths.shape[0]
        state = dict(
            i=jnp.int32(0), cache=cache, logits=logits, active=active, key=key,
            tokens=jnp.full((b, self.max_new), self.pad_id, jnp.int32), count=jnp.zeros(b, jnp.int32),
            reason=jnp.zeros(b, jnp.int32), window=jnp.where(resume[:, None], window, 0).astype(jnp.uint8),
        )
        budget = jnp.minimum(budget, self.max_new)

        def cond(s):
            stopped = jnp.sum(active & ~s["active"])
            return (s["i"] < self.max_new) & jnp.any(s["active"]) & (stopped < min_stopped)

        def body(s):
            key, sub = jax.random.split(s["key"])
            token = sample(s["logits"], sub, temperature, top_k, top_p)
            active = s["active"]
            token = jnp.where(active, token, self.pad_id)
            tokens = s["tokens"].at[:, s["i"]].set(token)
            count = s["count"] + active
            window, matched = append_and_match(s["window"], token, tables)
            position = lengths + count - 1  # where this token would be written
            reason = jnp.select(
                [jnp.any(token[:, None] == self.end_ids[None, :], axis=1), matched, count >= budget,
                 position >= self.max_len - 1],
                [EOS, STOP_STRING, MAX_TOKENS, CONTEXT_FULL], RUNNING)
            reason = jnp.where(active, reason, s["reason"])
            still = active & (reason == RUNNING)
            new_logits, cache = model.extend(s["cache"], token[:, None], position[:, None], still[:, None].astype(jnp.int32))
            logits = jnp.where(still[:, None], new_logits[:, 0], s["logits"])
            return dict(i=s["i"] + 1, cache=cache, logits=logits, active=still, key=key, tokens=tokens,
                        count=count, reason=reason, window=window)

        out = jax.lax.while_loop(cond, body, state)
        return Generated(out["tokens"], out["count"], out["reason"], out["cache"], out["logits"], out["window"],
                         out["key"])


class Decoder:
    """Compiled extend and decode for one model, batch size, cache length and token budget.

    The programs compiled are: an extend per length bucket and row bucket, and one decode loop, all over the
    model's blocks unstacked (see unstack_layers). They run on `mesh`, by default the mesh the model's parameters
    are laid out on (one device when they carry none).
    """

    def __init__(self, model: Llama, tokenizer: Tokenizer, stop_strings: tuple[str, ...], batch: int, max_len: int,
                 max_new_tokens: int, buckets: tuple[int, ...] = DEFAULT_BUCKETS, mesh=None, end_ids: tuple[int, ...] = ()):
        self.graphdef, params = nnx.split(unstack_layers(model))
        self.cfg = model.config
        self.batch, self.max_len, self.max_new = batch, max_len, max_new_tokens
        self.pad_id = tokenizer.pad_id
        self.end_ids = np.array(sorted({tokenizer.eos_id, *end_ids}), np.int32)  # EOS and a template's end of turn
        self.buckets = decode_buckets(buckets, max_len)
        self.tables = stop_tables(tokenizer, self.cfg.vocab_size, stop_strings)
        self.mesh = mesh or sharding.mesh_of(params) or sharding.make_mesh(devices=jax.devices()[:1])
        self.params = jax.device_put(params, sharding.state_shardings(params, self.mesh))  # as the programs expect
        self.programs = DecodePrograms(self.graphdef, self.params, self.cfg, batch, max_len, max_new_tokens,
                                       self.end_ids, self.pad_id, self.mesh)

    def new_state(self) -> tuple[KVCache, jax.Array]:
        """An empty cache and zero logits [B, V], placed as extend and decode return them."""
        with sharding.activate(self.mesh):
            return self.programs.new_state(self.params)

    def warm_up(self, cache: KVCache, logits: jax.Array) -> tuple[KVCache, jax.Array]:
        """Compile every program an evaluation will use (each extend bucket, row copies, the decode loop) before it
        starts, ahead of time from their shapes: nothing runs, so the cache and logits come back as they were
        (running the programs on idle rows cost as much as real work: ~30 s for SmolLM2 at 32 x 1024)."""
        with sharding.activate(self.mesh):
            for program, args in self.programs.abstract_inputs(self.params, self.tables, self.buckets).values():
                program.lower(*args).compile()
        return cache, logits

    @property
    def refill_rows(self) -> int:
        """Rows the small extend program holds: a loop lets this many replies end before it refills them."""
        return self.programs.row_buckets[0]

    # -- extend ---------------------------------------------------------------------------------

    def extend(self, cache: KVCache, logits: jax.Array, new_tokens: list[list[int]], starts: list[int]):
        """Write each row's new tokens at positions starts[r]...; rows with none keep their logits.

        Returns (cache, logits [B, V] at each row's last new token). Long inputs go in bucket-sized chunks.
        """
        pending = [list(t) for t in new_tokens]
        offsets = list(starts)
        for r, toks in enumerate(pending):
            if offsets[r] + len(toks) > self.max_len:
                raise ValueError(f"row {r}: {offsets[r] + len(toks)} tokens exceed the cache of {self.max_len}")
        while any(pending):
            live = [r for r, toks in enumerate(pending) if toks]
            n = next(b for b in self.programs.row_buckets if b >= len(live))
            if n == self.batch and len(live) <= self.batch // 2:  # a few rows more than the small program holds:
                live, n = live[: self.refill_rows], self.refill_rows  # run them in its groups, not the whole batch
            # The width fits the shortest input (an observation), so a long prompt beside it goes in chunks
            # instead of padding every short row to the prompt's bucket; only the rows with input are run.
            shortest = min(len(pending[r]) for r in live)
            width = chunk_width(shortest, self.buckets, CALL_COST_TOKENS / n)
            rows = np.array(live + [self.batch] * (n - len(live)) if n < self.batch else range(self.batch), np.int32)
            tokens = np.full((n, width), self.pad_id, np.int32)
            positions = np.zeros((n, width), np.int32)
            segments = np.zeros((n, width), np.int32)
            for i, r in enumerate(rows):
                chunk = pending[r][:width] if r < self.batch else []
                tokens[i, : len(chunk)] = chunk
                positions[i, : len(chunk)] = np.arange(offsets[r], offsets[r] + len(chunk)) if chunk else 0
                segments[i, : len(chunk)] = 1
                if chunk:
                    pending[r] = pending[r][width:]
                    offsets[r] += len(chunk)
            cache, logits = self._extend_chunk(cache, logits, rows, tokens, positions, segments)
        return cache, logits

    def copy_rows(self, cache: KVCache, sources: list[int], targets: list[int]) -> KVCache:
        """Copy cache row sources[i] onto targets[i] (all of it: the caller tracks which slots it then holds)."""
        n = next(b for b in self.programs.row_buckets if b >= len(targets))
        padding = [self.batch] * (n - len(targets))  # out of range: copies nothing
        with sharding.activate(self.mesh):
            return self.programs.copy_rows[n](cache, np.array(list(sources) + padding, np.int32),
                                              np.array(list(targets) + padding, np.int32))

    def _extend_chunk(self, cache, logits, rows, tokens, positions, segments):
        """One extend program call: all rows, or the gathered `rows` (padded with out-of-range indices)."""
        with sharding.activate(self.mesh):
            if len(rows) == self.batch:
                return self.programs.extend(self.params, cache, logits, tokens, positions, segments)
            return self.programs.extend_rows[len(rows)](self.params, cache, logits, rows, tokens, positions, segments)

    # -- decode ---------------------------------------------------------------------------------

    def decode(self, cache: KVCache, logits: jax.Array, lengths: np.ndarray, active: np.ndarray,
               sampling: list[Sampling], key: jax.Array, max_new=None, *, window: jax.Array | None = None,
               resume: np.ndarray | None = None, min_stopped: int | None = None) -> Generated:
        """Generate for active rows, from their logits, the next position being `lengths[r]`.

        `max_new`: the token budget, one for all rows or one per row (default: the decoder's). It returns once
        `min_stopped` rows have stopped (default: when all have); `resume` rows continue a reply a previous call
        left running, whose `window` (that call's Generated.window) holds its recent text.
        """
        temperature = np.array([s.temperature for s in sampling], np.float32)
        top_k = np.array([s.top_k for s in sampling], np.int32)
        top_p = np.array([s.top_p for s in sampling], np.float32)
        budget = np.broadcast_to(np.asarray(self.max_new if max_new is None else max_new, np.int32), (self.batch,))
        resume = np.zeros(self.batch, bool) if resume is None else np.asarray(resume, bool)
        if window is None:
            window = jax.device_put(np.zeros((self.batch, self.tables.window), np.uint8), self.programs.window_sharding)
        # The key enters as host data: a fresh key and the device-placed one a decode returned then look alike
        # to jit, so the second reply of an evaluation does not compile the loop again after warm_up.
        key_data = np.asarray(jax.random.key_data(key))
        active = np.asarray(active, bool)
        args = (self.params, self.tables, cache, logits, window, np.asarray(lengths, np.int32), active, resume, budget,
                temperature, top_k, top_p, key_data, np.int32(min_stopped or self.batch))
        live = np.flatnonzero(active)
        n = next((n for n in sorted(self.programs.decode_rows) if n >= len(live)), None)
        with sharding.activate(self.mesh):
            if n is None:
                return self.programs.decode(*args)
            rows = np.concatenate([live, np.full(n - len(live), self.batch)]).astype(np.int32)
            return self.programs.decode_rows[n](*args, rows)


ROWS_AXES = ("layers", None, "cache_len", "act_kv_heads", "head_dim")  # a few gathered rows, on every device


def take_rows(cache: jax.Array, rows: jax.Array) -> jax.Array:
    """cache[:, rows] for a few rows [L, B, ...] -> [L, n, ...] (an index >= B reads zeros), one slice per row.

    XLA:CPU runs a gather over the batch axis as a copy of the whole cache (~60 ms for SmolLM2's at 32 x 1024).
    On a mesh each device slices the rows it holds and a sum over the batch axes assembles them: a dynamic slice
    across shards made SPMD gather the whole cache on every device (FireAct's eval on v4-8, copy 2 rows: 16 GiB of
    temporaries for a 4 GiB cache).
    """
    batch_axes = _cache_batch_axes(cache)

    def local(part, rows):
        at, here = _local_rows(batch_axes, rows, part.shape[1])
        slices = []
        for i in range(rows.shape[0]):
            piece = jax.lax.dynamic_slice_in_dim(part, at[i], 1, axis=1)
            slices.append(jnp.where(here[i], piece, jnp.zeros_like(piece)))
        gathered = jnp.concatenate(slices, axis=1)
        return gathered if batch_axes is None else jax.lax.psum(gathered, batch_axes)

    return sharding.per_device(local, (cache, rows), (CACHE_AXES, (None,)), ROWS_AXES)


def put_rows(cache: jax.Array, rows: jax.Array, values: jax.Array) -> jax.Array:
    """cache with cache[:, rows[i]] = values[:, i] where rows[i] < B (others write nothing), updated in place by
    the device holding the row."""
    batch_axes = _cache_batch_axes(cache)

    def local(part, rows, values):
        at, here = _local_rows(batch_axes, rows, part.shape[1])
        for i in range(rows.shape[0]):
            kept = jax.lax.dynamic_slice_in_dim(part, at[i], 1, axis=1)
            value = jnp.where(here[i], values[:, i:i + 1].astype(part.dtype), kept)
            part = jax.lax.dynamic_update_slice_in_dim(part, value, at[i], axis=1)
        return part

    return sharding.per_device(local, (cache, rows, values), (CACHE_AXES, (None,), ROWS_AXES), CACHE_AXES)


def _cache_batch_axes(cache: jax.Array) -> str | tuple[str, ...] | None:
    """The mesh axes the active mesh splits a cache's rows over (None: each device holds every row)."""
    mesh = sharding.active_mesh()
    return None if mesh is None or mesh.size == 1 else sharding.logical_to_spec(CACHE_AXES, cache.shape, mesh)[1]


def _local_rows(batch_axes, rows: jax.Array, rows_here: int) -> tuple[jax.Array, jax.Array]:
    """Inside per_device: each batch index as an index into this device's rows (clipped into range), and whether
    this device holds it."""
    local = rows if batch_axes is None else rows - jax.lax.axis_index(batch_axes) * rows_here
    return jnp.clip(local, 0, rows_here - 1), (local >= 0) & (local < rows_here)


def decode_row_buckets(batch: int, platform: str) -> tuple[int, ...]:
    """Live-row counts a gathered decode loop is compiled for: a quarter of the batch, on a CPU only. There a step
    costs in proportion to its rows (at SmolLM2's 32 x 1024: 200 ms for 32 rows, 83 for 8); an accelerator's step
    is bound by reading the weights whatever the rows, and the gathered rows would cost HBM."""
    return (batch // 4,) if batch >= 16 and platform == "cpu" else ()


def extend_row_buckets(batch: int) -> tuple[int, ...]:
    """Row counts the extends are compiled for: a few rows (new episodes' prompts, refilled one by one) and all."""
    return tuple(sorted({max(1, batch // 8), batch}))


@functools.lru_cache(maxsize=4096)
def chunk_width(length: int, buckets: tuple[int, ...], call_cost: float) -> int:
    """The width of the first of the cheapest series of extend calls covering `length` tokens, a call costing its
    width (padding included) plus `call_cost`: 80 tokens go as 64 + 16, not padded to 256. Ties go to the wider
    call; beyond twice the widest bucket the widest comes first."""
    if length > 2 * buckets[-1]:
        return buckets[-1]
    cost, first = [0.0] * (length + 1), [0] * (length + 1)
    for r in range(1, length + 1):
        cost[r], first[r] = min((call_cost + b + cost[max(r - b, 0)], -b) for b in buckets)
    return -first[length]


def decode_buckets(buckets: tuple[int, ...], max_len: int) -> tuple[int, ...]:
    """The extend widths compiled: the configured buckets that fit the cache (the cache length when none does)."""
    return tuple(b for b in sorted(set(buckets)) if b <= max_len) or (max_len,)
