"""Train tokens/s and MFU of agentjax's train step on the ~100M-parameter Llama (float32) against this CPU's measured
matmul peak, next to the same model trained by Hugging Face transformers on PyTorch; peak memory against the
analytic minimum; and the data pipeline's tokens/s against what a train step consumes.

    python benchmarks/train_throughput.py [--preset 100m] [--batch 4] [--seq 512] [--repeats 3] [--attention auto]
        [--variants remat=full,attention=reference] [--frozen-layers 15,20] [--no-torch] [--data ../shared/data]
        [--out runs/bench/train_throughput.json]

Both frameworks run one optimizer step on the same batch of random tokens (every token supervised): forward,
token-mean cross-entropy, backward, global-norm clipping to 1.0, AdamW (b1 0.9, b2 0.95). agentjax runs the
trainer's own compiled step (agentjax.train.program, state donated, 1-device mesh); PyTorch runs
LlamaForCausalLM (its default SDPA attention) with torch.optim.AdamW on all cores, in float32 and (beside it,
not like for like) under bfloat16 autocast, which a CPU user with AMX would run. The matmul peak (2 n^3
FLOPs / median seconds of an n x n float32 matmul, the best of n = 2048 and 4096) and the contestants
alternate within each repeat, so load from other processes on a shared machine hits them alike; medians after one warm-up step, and each contestant's fastest step (the
machine momentarily quiet). MFU = tokens/s x perf.train_flops_per_token / peak, for both frameworks.

Memory: XLA's own accounting of the compiled step (arguments + temporaries + outputs not aliased to
arguments), and the peak growth of a fresh process's resident memory while it builds one framework's
model and optimizer state and runs one step (agentjax's includes compiling), against the analytic minimum
of `analytic_memory` (parameters, gradients, Adam moments, activations kept for the backward).
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from common import BENCH_DIR, interleaved_times, print_table, write_json
from agentjax import perf, sharding
from agentjax.model import Llama, LlamaConfig, preset
from agentjax.train.config import OptimizerConfig, TrainConfig
from agentjax.train.program import TrainProgram

OPTIMIZER = OptimizerConfig(learning_rate=3e-4, schedule="constant", b1=0.9, b2=0.95, weight_decay=0.0, clip_norm=1.0)


def analytic_memory(cfg: LlamaConfig, batch: int, seq: int) -> dict[str, int]:
    """Bytes a float32 AdamW step cannot do without (no rematerialisation).

    params + grads + Adam mu + nu = 16 bytes x parameters. Activations kept for the backward, per token
    and layer: block input, its norm, q, k, v, attention output (before o_proj), residual after attention,
    its norm, gate, up, silu(gate)*up, and what attention keeps: the probabilities (n_heads x seq per token)
    for the dense reference, one log-sum-exp per head for the others: floats 6 dim + 2 kv_heads x head_dim +
    3 mlp_dim + that (with n_heads x head_dim = dim); plus the gradient of the final features (dim floats per
    token) that the fused cross-entropy keeps instead of [B,T,V] logits.
    """
    p = cfg.n_params
    kept_by_attention = cfg.n_heads * seq if cfg.attention == "reference" else cfg.n_heads
    per_token_layer = 6 * cfg.dim + 2 * cfg.n_kv_heads * cfg.head_dim + 3 * cfg.mlp_dim + kept_by_attention
    activations = 4 * batch * seq * (cfg.n_layers * per_token_layer + cfg.dim)
    parts = {"params": 4 * p, "grads": 4 * p, "adam": 8 * p, "activations": activations}
    return {**parts, "total": sum(parts.values())}


def peak_rss_growth(contestant: str, args) -> int:
    """Peak resident memory of a fresh process that builds `contestant` on the benchmark's config and runs one
    step, minus its resident memory before (after imports). A separate process, because JAX and PyTorch
    share glibc's heap: memory one freed would be reused by the other without showing."""
    command = [sys.executable, __file__, "--memory-of", contestant, "--preset", args.preset,
               "--batch", str(args.batch), "--seq", str(args.seq), "--attention", args.attention]
    out = subprocess.run(command, capture_output=True, text=True, check=True, cwd=Path(__file__).parent).stdout
    return int(out.split()[-1])


def report_peak_rss_growth(contestant: str, args) -> None:
    """--memory-of: print this process's peak RSS growth while `contestant` builds its state and takes a step."""
    with open("/proc/self/statm") as f:
        before = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    cfg = preset(args.preset, max_seq_len=args.seq, attention=args.attention)
    step = (AgentjaxStep if contestant == "agentjax" else TorchStep)(cfg, random_batch(cfg, args.batch, args.seq))
    step()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before)


def random_batch(cfg: LlamaConfig, batch: int, seq: int) -> dict[str, np.ndarray]:
    tokens = np.random.RandomState(0).randint(0, cfg.vocab_size, (batch, seq + 1)).astype(np.int32)
    return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:],
            "positions": np.broadcast_to(np.arange(seq, dtype=np.int32), (batch, seq)).copy(),
            "segment_ids": np.ones((batch, seq), np.int32), "weights": np.ones((batch, seq), np.float32)}


class AgentjaxStep:
    """The trainer's compiled train step (TrainProgram) on one device, state donated from step to step."""

    def __init__(self, cfg: LlamaConfig, batch: dict[str, np.ndarray], frozen_layers: int = 0):
        mesh = sharding.make_mesh()
        model = sharding.create_sharded(lambda: Llama(cfg, rngs=nnx.Rngs(params=0)), mesh)
        graphdef, params = nnx.split(model, nnx.Param)
        train = TrainConfig(steps=1000, global_batch=len(batch["inputs"]), frozen_layers=frozen_layers,
                            optimizer=OPTIMIZER)
        self.program = TrainProgram(graphdef, params, {}, mesh, train, seed=0, dropout=False)
        self.state = self.program.init(nnx.to_pure_dict(params))
        self.batch = {k: jax.device_put(v, self.program.batch_shardings()[k]) for k, v in batch.items()}
        compiled = self.program.train_step.lower(self.state, {}, self.batch).compile()
        m = compiled.memory_analysis()
        self.xla_bytes = m.argument_size_in_bytes + m.temp_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
        self.loss = None

    def __call__(self):
        with sharding.activate(self.program.mesh):
            self.state, metrics = self.program.train_step(self.state, {}, self.batch)
        self.loss = float(metrics["loss"])  # blocks until the step is done


class TorchStep:
    """LlamaForCausalLM with the same shapes, AdamW, the same batch; float32 weights, optionally bf16 autocast."""

    def __init__(self, cfg: LlamaConfig, batch: dict[str, np.ndarray], bf16_autocast: bool = False):
        import torch
        import transformers

        torch.set_num_threads(os.cpu_count())
        hf = transformers.LlamaConfig(
            vocab_size=cfg.vocab_size, hidden_size=cfg.dim, intermediate_size=cfg.mlp_dim,
            num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_kv_heads,
            head_dim=cfg.head_dim, max_position_embeddings=cfg.max_seq_len, rms_norm_eps=cfg.norm_eps,
            rope_theta=cfg.rope_theta, tie_word_embeddings=cfg.tie_embeddings)
        self.torch = torch
        self.model = transformers.LlamaForCausalLM(hf).float().train()
        self.attention = self.model.config._attn_implementation
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=OPTIMIZER.learning_rate,
                                           betas=(OPTIMIZER.b1, OPTIMIZER.b2), eps=OPTIMIZER.eps, weight_decay=0.0)
        self.inputs = torch.tensor(batch["inputs"], dtype=torch.long)
        self.targets = torch.tensor(batch["targets"], dtype=torch.long)
        self.bf16_autocast = bf16_autocast
        self.loss = None

    def __call__(self):
        torch = self.torch
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16_autocast):
            logits = self.model(input_ids=self.inputs).logits
        loss = torch.nn.functional.cross_entropy(logits.float().view(-1, logits.shape[-1]), self.targets.view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), OPTIMIZER.clip_norm)
        self.optimizer.step()
        self.loss = float(loss.detach())


def matmul(n: int):
    """One n x n float32 matmul on the default device, blocking: the contestant that measures the peak."""
    a = jax.numpy.ones((n, n), jax.numpy.float32)
    f = jax.jit(lambda x: x @ x)
    return lambda: f(a).block_until_ready()


def pipeline_tokens_per_s(data: Path, batch: int, seq: int) -> dict | None:
    """The tf.data pipeline on FireAct trajectories at the benchmark's batch and row length (benchmarks/data_packing.py)."""
    from data_packing import FILE, throughput

    from agentjax.configlib import from_dict
    from agentjax.data.config import DataConfig
    from agentjax.data.formats import read_conversations
    from agentjax.data.templates import template_markers
    from agentjax.data.tokenizer import train_sentencepiece

    path = data / FILE
    if not path.exists():
        print(f"(no {path}: data pipeline not measured; pass --data)")
        return None
    texts = [t.content for c in read_conversations(path, "fireact") for t in c.turns]
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = train_sentencepiece(texts, 2048, Path(tmp) / "tokenizer.model", user_symbols=template_markers())
    config = from_dict(DataConfig, {"sources": [{"path": str(path), "format": "fireact"}], "seq_len": seq})
    return throughput(config, tokenizer, batch, batches=100)


def main() -> None:
    here = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="100m")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--attention", default="auto", help="agentjax's attention backend (model.attention)")
    parser.add_argument("--variants", default="", help="extra agentjax model configs, e.g. remat=full,attention=reference")
    parser.add_argument("--frozen-layers", default="", help="extra agentjax runs with the first N blocks frozen "
                        "(train.frozen_layers), e.g. 15,20")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--memory-of", choices=["agentjax", "pytorch"], help=argparse.SUPPRESS)  # internal
    parser.add_argument("--data", default=os.environ.get("AGENTJAX_SHARED_DATA", str(here.parent / "shared" / "data")))
    parser.add_argument("--out", default=str(BENCH_DIR / "train_throughput.json"))
    args = parser.parse_args()

    if args.memory_of:
        return report_peak_rss_growth(args.memory_of, args)
    cfg = preset(args.preset, max_seq_len=args.seq, attention=args.attention)
    batch = random_batch(cfg, args.batch, args.seq)
    names = ["agentjax"] + ([] if args.no_torch else ["pytorch"])
    memory = {name: {"rss_bytes": peak_rss_growth(name, args)} for name in names}
    configs = {"agentjax": cfg} | {
        f"agentjax {v}": preset(args.preset, max_seq_len=args.seq, **{"attention": args.attention, **dict([v.split("=")])})
        for v in filter(None, args.variants.split(","))}
    contestants = {name: AgentjaxStep(variant, batch) for name, variant in configs.items()}
    frozen = {f"agentjax frozen_layers={n}": int(n) for n in filter(None, args.frozen_layers.split(","))}
    contestants |= {name: AgentjaxStep(cfg, batch, frozen_layers=n) for name, n in frozen.items()}
    for name, step in contestants.items():
        memory.setdefault(name, {})["xla_bytes"] = step.xla_bytes
    if not args.no_torch:
        contestants["pytorch"] = TorchStep(cfg, batch)
        contestants["pytorch bf16 autocast"] = TorchStep(cfg, batch, bf16_autocast=True)
    peaks = {2048: matmul(2048), 4096: matmul(4096)}

    times = interleaved_times({**{f"matmul {n}": f for n, f in peaks.items()}, **contestants}, args.repeats)
    matmul_flops = {n: 2 * n**3 / statistics.median(times[f"matmul {n}"]) for n in peaks}
    peak = max(matmul_flops.values())
    tokens = args.batch * args.seq
    flops_per_token = perf.train_flops_per_token(cfg, args.seq)
    rows = []
    for name, step in contestants.items():
        seconds = statistics.median(times[name])
        tokens_per_s = tokens / seconds
        done = perf.train_flops_per_token(cfg, args.seq, frozen_layers=frozen.get(name, 0))  # no backward below
        rows.append({"name": name, "step_s": seconds, "best_step_s": min(times[name]), "tokens_per_s": tokens_per_s,
                     "gflops": tokens_per_s * done / 1e9, "mfu": tokens_per_s * done / peak,
                     "loss": step.loss, **{f"{k}_gb": v / 1e9 for k, v in memory[name].items()}})
    torch_tps = next((r["tokens_per_s"] for r in rows if r["name"] == "pytorch"), None)
    for r in rows:
        r["vs_pytorch"] = r["tokens_per_s"] / torch_tps if torch_tps else None
    minimum = analytic_memory(cfg, args.batch, args.seq)
    pipeline = pipeline_tokens_per_s(Path(args.data), args.batch, args.seq)
    del contestants
    gc.collect()

    print(f"{args.preset}: {cfg.n_params / 1e6:.1f}M parameters, float32, batch {args.batch} x seq {args.seq}, "
          f"{flops_per_token / 1e6:.0f} MFLOP/token (6N + attention); matmul peak {peak / 1e9:.1f} GFLOP/s "
          f"({', '.join(f'{n}: {v / 1e9:.1f}' for n, v in matmul_flops.items())}); "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print_table("train step (medians of %d after warm-up; best: fastest step)" % args.repeats, rows, [
        ("name", "", "s"), ("step_s", "s/step", ".2f"), ("best_step_s", "best s", ".2f"),
        ("tokens_per_s", "tokens/s", ",.0f"), ("gflops", "GFLOP/s", ".1f"), ("mfu", "MFU", ".1%"),
        ("vs_pytorch", "vs PyTorch", ".2f"), ("xla_bytes_gb", "XLA GB", ".2f"), ("rss_bytes_gb", "RSS +GB", ".2f")])
    print_table("analytic minimum memory (GB)", [{k: v / 1e9 for k, v in minimum.items()}],
                [(k, k, ".2f") for k in minimum])
    if pipeline:
        consumed = max(r["tokens_per_s"] for r in rows)
        print(f"\ndata pipeline (FireAct, batch {args.batch} x {args.seq}): {pipeline['slots_per_s']:,.0f} row tokens/s, "
              f"{pipeline['tokens_per_s']:,.0f} real tokens/s; the fastest train step consumes {consumed:,.0f} "
              f"tokens/s ({pipeline['slots_per_s'] / consumed:,.0f}x headroom)")
    write_json(args.out, {"benchmark": "train_throughput", "preset": args.preset, "params": cfg.n_params,
                          "batch": args.batch, "seq": args.seq, "flops_per_token": flops_per_token,
                          "matmul_peak_flops": peak, "matmul_flops_by_size": matmul_flops, "rows": rows,
                          "step_seconds": times, "analytic_memory_bytes": minimum,
                          "max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                          "pipeline": pipeline})

if __name__ == "__main__":
    main()
