"""Forward tokens/s and MFU of a ~100M-parameter Llama (float32) against this machine's matmul peak.

    python benchmarks/forward_throughput.py [--preset 100m] [--batch 8] [--seq 512] [--out runs/bench/forward.json]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from agentjax import perf
from agentjax.model import Llama, preset


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="100m")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "runs" / "bench" / "forward.json"))
    args = p.parse_args()

    cfg = preset(args.preset, max_seq_len=args.seq)
    model = Llama(cfg, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    forward = jax.jit(lambda s, t: nnx.merge(graphdef, s)(t))
    tokens = jnp.asarray(np.random.RandomState(0).randint(0, cfg.vocab_size, (args.batch, args.seq)))

    peak = perf.measured_matmul_peak()
    seconds = perf.median_seconds(lambda: forward(state, tokens).block_until_ready(), repeats=args.repeats)
    tokens_per_s = tokens.size / seconds
    flops = perf.forward_flops_per_token(cfg, args.seq) * tokens_per_s
    result = dict(
        preset=args.preset, params_m=cfg.n_params / 1e6, batch=args.batch, seq=args.seq, dtype=cfg.dtype,
        devices=jax.device_count(), platform=jax.devices()[0].platform, cpu_count=os.cpu_count(),
        forward_seconds_median=seconds, tokens_per_s=tokens_per_s, model_flops_per_s=flops,
        matmul_peak_flops_per_s=peak, mfu=flops / peak,
    )
    print(f"{'preset':<10}{'params':>10}{'batch x seq':>14}{'tokens/s':>12}{'GFLOP/s':>10}{'peak GFLOP/s':>14}{'MFU':>8}")
    print(f"{args.preset:<10}{cfg.n_params / 1e6:>9.1f}M{f'{args.batch} x {args.seq}':>14}{tokens_per_s:>12,.0f}"
          f"{flops / 1e9:>10.1f}{peak / 1e9:>14.1f}{flops / peak:>8.1%}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
