"""`agentjax demo`: build a small Llama on the device mesh, run it, and say what happened.

A short, real run of the model for a fresh machine: a sharded random init, a full forward, and
greedy decoding with the KV cache checked against the full forward.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from agentjax import sharding
from agentjax.model import Llama, preset


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="small", help="model preset (see agentjax/model/llama.py)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--prompt-len", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=32)


def run(args) -> int:
    cfg = preset(args.preset)
    mesh = sharding.make_mesh()
    t0 = time.perf_counter()
    model = sharding.create_sharded(lambda: Llama(cfg, rngs=nnx.Rngs(0)), mesh)
    print(f"model: preset {args.preset}, {cfg.n_params / 1e6:.2f}M parameters, {cfg.n_layers} layers, "
          f"mesh {dict(mesh.shape)} on {jax.device_count()} {jax.devices()[0].platform} device(s), "
          f"init {time.perf_counter() - t0:.1f}s")

    tokens = jnp.asarray(np.random.RandomState(0).randint(0, cfg.vocab_size, (args.batch, args.prompt_len)))
    forward = nnx.jit(lambda m, t: m(t))
    logits = forward(model, tokens).block_until_ready()
    t0 = time.perf_counter()
    forward(model, tokens).block_until_ready()
    dt = time.perf_counter() - t0
    print(f"forward: logits {tuple(logits.shape)}, {tokens.size / dt:,.0f} tokens/s")

    @nnx.jit
    def step(m, cache, tok, pos):
        seg = jnp.ones_like(tok)
        logits, cache = m.extend(cache, tok, pos, seg)
        return jnp.argmax(logits[:, -1], -1)[:, None], cache

    total = args.prompt_len + args.new_tokens
    cache = model.init_cache(args.batch, total)
    positions = jnp.broadcast_to(jnp.arange(args.prompt_len), tokens.shape)
    nxt, cache = step(model, cache, tokens, positions)
    generated = [nxt]
    t0 = time.perf_counter()
    for i in range(args.new_tokens - 1):
        nxt, cache = step(model, cache, nxt, jnp.full((args.batch, 1), args.prompt_len + i))
        generated.append(nxt)
    jax.block_until_ready(nxt)
    dt = time.perf_counter() - t0
    sequence = jnp.concatenate([tokens] + generated, axis=1)
    full = forward(model, sequence[:, :-1])
    greedy = jnp.argmax(full[:, args.prompt_len - 1:], -1)
    agree = float(jnp.mean(greedy == sequence[:, args.prompt_len:]))
    print(f"decode: {args.new_tokens} tokens x {args.batch} rows with the KV cache, "
          f"{args.batch * (args.new_tokens - 1) / dt:,.0f} tokens/s; greedy tokens agree with the full forward: {agree:.0%}")
    return 0 if agree == 1.0 else 1
