"""Seconds and XLA temporary memory of one attention call, forward and forward + backward, per backend and length.

    python benchmarks/attention_backends.py [--shapes 4x512,1x2048,1x4096] [--backends reference,blockwise]
        [--heads 12] [--kv-heads 12] [--head-dim 64] [--repeats 3] [--out runs/bench/attention_backends.json]

One layer's self-attention of the 100m preset's shape (float32, one segment per row) through
`agentjax.model.attention.self_attention`; the gradient is of sum(out^2) with respect to q, k and v. Backends
alternate within each repeat (a shared machine's load hits them alike); medians after one warm-up call. Memory
is XLA's own accounting of the compiled program (temporaries), which is what grows with the attended length.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from common import BENCH_DIR, environment, interleaved_medians, print_table, write_json
from agentjax.model import attention


def programs(backend: str, batch: int, seq: int, args):
    """The jitted forward and gradient of one backend at one shape, their inputs, and their temporary bytes."""
    rng = np.random.RandomState(0)
    q = jnp.asarray(rng.randn(batch, seq, args.heads, args.head_dim), jnp.float32)
    k, v = (jnp.asarray(rng.randn(batch, seq, args.kv_heads, args.head_dim), jnp.float32) for _ in range(2))
    segments = jnp.ones((batch, seq), jnp.int32)

    def forward(q, k, v):
        return attention.self_attention(q, k, v, segments, backend)

    grad = jax.jit(jax.grad(lambda q, k, v: jnp.sum(forward(q, k, v) ** 2), argnums=(0, 1, 2)))
    forward = jax.jit(forward)
    memory = {name: f.lower(q, k, v).compile().memory_analysis().temp_size_in_bytes
              for name, f in (("fwd", forward), ("grad", grad))}
    return (lambda: jax.block_until_ready(forward(q, k, v))), (lambda: jax.block_until_ready(grad(q, k, v))), memory


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default="4x512,1x2048,1x4096", help="batch x sequence length")
    p.add_argument("--backends", default="reference,blockwise")
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--kv-heads", type=int, default=12)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(BENCH_DIR / "attention_backends.json"))
    args = p.parse_args()
    rows = []
    for shape in args.shapes.split(","):
        batch, seq = (int(n) for n in shape.split("x"))
        fns, memory = {}, {}
        for backend in args.backends.split(","):
            fwd, grad, memory[backend] = programs(backend, batch, seq, args)
            fns |= {f"{backend} fwd": fwd, f"{backend} grad": grad}
        t = interleaved_medians(fns, args.repeats)
        for backend in args.backends.split(","):
            rows.append(dict(batch=batch, seq=seq, backend=backend, fwd_s=t[f"{backend} fwd"],
                             grad_s=t[f"{backend} grad"], fwd_temp_mb=memory[backend]["fwd"] / 1e6,
                             grad_temp_mb=memory[backend]["grad"] / 1e6))
            print(f"{shape} {backend}: fwd {rows[-1]['fwd_s']:.3f} s, fwd+bwd {rows[-1]['grad_s']:.3f} s", flush=True)
    env = environment()
    print_table(f"one attention layer, {args.heads} heads ({args.kv_heads} kv) x {args.head_dim}, float32 "
                f"(median of {args.repeats}; load average {env['load_average_1m']:.1f})", rows, [
                    ("batch", "batch", "d"), ("seq", "seq", "d"), ("backend", "backend", ""), ("fwd_s", "fwd s", ".3f"),
                    ("grad_s", "fwd+bwd s", ".3f"), ("fwd_temp_mb", "fwd temp MB", ",.0f"),
                    ("grad_temp_mb", "fwd+bwd temp MB", ",.0f")])
    write_json(args.out, dict(benchmark="attention_backends", rows=rows, args=vars(args)))


if __name__ == "__main__":
    main()
