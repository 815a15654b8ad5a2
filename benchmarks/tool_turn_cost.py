"""Cost of one tool turn: extending the KV cache with the reply + observation, against re-prefilling the conversation.

    python benchmarks/tool_turn_cost.py [--presets small,100m] [--contexts 1024,2048] [--turn 80] [--batch 1]
        [--cache-len 2304] [--buckets 16,64,256] [--repeats 5] [--attention auto,reference]
        [--out runs/bench/tool_turn_cost.json]

A cache already holds `context` tokens of conversation; the turn adds `--turn` tokens (the reply's canonical
tokens, EOS, the observation and the next reply's opening: 68-85 tokens (10th-90th percentile) in the world's ReAct
trajectories with the benchmarks' 2048-piece tokenizer).
Timed, on the same random model and tokens:
  extend         agentjax's way: `Decoder.extend` writes only the turn's tokens onto the kept cache;
  re-prefill     the whole conversation (context + turn) through `Decoder.extend` from position 0, as a
                 loop without a kept cache would (in chunks of the largest extend bucket);
  full forward   the whole conversation as one jitted forward pass at its exact length (no cache, no
                 bucket padding): a re-prefill as peers using HF generate pay it every turn.
The ratio is re-prefill time / extend time (how many times cheaper the kept cache makes a tool turn).
Each `--attention` backend (model.attention) is measured on the same weights.
"""

from __future__ import annotations

import argparse

import jax
import numpy as np
from flax import nnx

from common import BENCH_DIR, interleaved_medians, print_table, world_tokenizer, write_json
from agentjax.agent.config import GenerationConfig
from agentjax.agent.decode import Decoder
from agentjax.data.templates import ReactTemplate
from agentjax.model import Llama, preset


def measure(model: Llama, tokenizer, context: int, args) -> dict:
    """Extend vs re-prefill vs one full forward for one context length."""
    rng = np.random.RandomState(context)
    conversation = rng.randint(4, tokenizer.vocab_size, (args.batch, context + args.turn))
    decoder = Decoder(model, tokenizer, ReactTemplate.stop_strings, args.batch, args.cache_len, 1, args.buckets)
    state = decoder.extend(*decoder.new_state(), conversation[:, :context].tolist(), [0] * args.batch)
    turn = conversation[:, context:].tolist()
    whole = conversation.tolist()

    def extend():  # the cache is donated; writing the same tokens at the same slots again leaves the same state
        nonlocal state
        state = jax.block_until_ready(decoder.extend(*state, turn, [context] * args.batch))

    def reprefill():  # stale slots past the conversation are masked, so no cache reset is needed
        nonlocal state
        state = jax.block_until_ready(decoder.extend(*state, whole, [0] * args.batch))

    graphdef, params = nnx.split(model)
    forward = jax.jit(lambda p, t: nnx.merge(graphdef, p)(t)[:, -1])
    tokens = jax.numpy.asarray(conversation)
    t = interleaved_medians({"extend": extend, "reprefill": reprefill,
                             "full_forward": lambda: forward(params, tokens).block_until_ready()}, args.repeats)
    return dict(attention=model.config.attention, context=context, turn=args.turn, batch=args.batch, cache_len=args.cache_len,
                extend_ms=1e3 * t["extend"], reprefill_ms=1e3 * t["reprefill"], full_forward_ms=1e3 * t["full_forward"],
                ratio=t["reprefill"] / t["extend"], forward_ratio=t["full_forward"] / t["extend"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", default="small,100m", help="model presets (random init); small ~4M, 100m ~134M")
    p.add_argument("--contexts", default="1024,2048", help="tokens already in the cache")
    p.add_argument("--turn", type=int, default=80, help="tokens one tool turn adds (reply + observation)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--cache-len", type=int, default=2304, help="the Decoder's cache length (fits 2048 + a turn)")
    p.add_argument("--buckets", default=",".join(map(str, GenerationConfig().buckets)),
                   help="the Decoder's extend lengths (default: the eval's)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--attention", default="auto,reference", help="attention backends (model.attention) to measure")
    p.add_argument("--out", default=str(BENCH_DIR / "tool_turn_cost.json"))
    args = p.parse_args()
    args.buckets = tuple(int(b) for b in args.buckets.split(","))
    tokenizer = world_tokenizer()
    rows = []
    for name in args.presets.split(","):
        for backend in args.attention.split(","):
            cfg = preset(name, vocab_size=max(tokenizer.vocab_size, preset(name).vocab_size), max_seq_len=args.cache_len,
                         attention=backend)
            model = Llama(cfg, rngs=nnx.Rngs(0))
            for context in (int(c) for c in args.contexts.split(",")):
                rows.append(dict(preset=name, params_m=cfg.n_params / 1e6, **measure(model, tokenizer, context, args)))
                print(f"{name} {backend} context {context}: extend {rows[-1]['extend_ms']:.1f} ms, "
                      f"re-prefill {rows[-1]['reprefill_ms']:.1f} ms", flush=True)
    print_table(f"One tool turn ({args.turn} tokens) at batch {args.batch}, cache of {args.cache_len}, float32 "
                f"(median of {args.repeats})", rows, [
                    ("preset", "preset", ""), ("params_m", "params (M)", ".1f"), ("attention", "attention", ""),
                    ("context", "context", "d"),
                    ("extend_ms", "extend ms", ".1f"), ("reprefill_ms", "re-prefill ms", ".1f"),
                    ("ratio", "ratio", ".1f"), ("full_forward_ms", "full fwd ms", ".1f"),
                    ("forward_ratio", "fwd ratio", ".1f")])
    write_json(args.out, dict(benchmark="tool_turn_cost", rows=rows, args=vars(args)))


if __name__ == "__main__":
    main()
