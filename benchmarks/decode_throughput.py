"""Decode tokens/s of agentjax's jitted while_loop decoder against Hugging Face `generate`, same CPU, same weights.

    python benchmarks/decode_throughput.py [--presets small,100m] [--models DIR,...] [--batches 1,16] [--prompt 128]
        [--new 128] [--repeats 3] [--torch-threads 1,2] [--cache-sweep 256,512,1024,2048] [--attention auto,reference]
        [--no-hf]
        [--out runs/bench/decode_throughput.json]

For each preset a randomly initialised agentjax model, and for each of `--models` a real one (an agentjax model
directory with its tokenizer, e.g. `agentjax convert gguf-to-agentjax smollm2-135m models/smollm2`), is exported
with `agentjax_to_hf`, so both sides run identical float32 weights. Per batch size, one run is: prefill a random `--prompt`-token prompt in every row,
then generate `--new` tokens greedily with the KV cache (agentjax: `Decoder.extend` + `Decoder.decode`, its
cache exactly prompt + new long, the react template's stop string checked on device; HF:
`generate(do_sample=False, use_cache=True)` in a child process, see HFRun). EOS is ignored by both (a random
model would otherwise stop at arbitrary points), so every row makes exactly `--new` tokens. The contestants
alternate within each repeat and medians are reported. HF's decode-only time is generate(new) - generate(1),
for new - 1 tokens. Greedy tokens are compared as a sanity check (agreement up to each row's first difference).

A second table shows the cost of agentjax's fixed-size cache: decode tokens/s of the same prompt and
tokens with the cache allocated at each `--cache-sweep` length, for each `--attention` backend (the first one
also runs against HF): the reference einsum reads every slot; the others read only the cache blocks up to the
longest live row.
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from common import BENCH_DIR, interleaved_medians, print_table, world_tokenizer, write_json
from agentjax.agent.decode import MAX_TOKENS, Decoder, Sampling
from agentjax.data.tokenizer import load_tokenizer
from agentjax.data.templates import ReactTemplate
from agentjax.model import Llama, load_checkpoint, preset
from agentjax.model.convert import agentjax_to_hf


@dataclass(frozen=True)
class IgnoringEos:
    """A tokenizer view whose EOS id no token has, so decoding runs to its token budget (HF: eos_token_id=None)."""

    tokenizer: object
    eos_id: int = -1

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)


class AgentjaxRun:
    """Prefill then greedy decode with agentjax's Decoder; each run rewrites the same cache slots (equal work)."""

    def __init__(self, model: Llama, tokenizer, prompts: np.ndarray, new: int, cache_len: int):
        self.batch, self.prompt_len = prompts.shape
        self.prompts, self.new = prompts.tolist(), new
        self.decoder = Decoder(model, IgnoringEos(tokenizer), ReactTemplate.stop_strings, self.batch, cache_len, new,
                               buckets=(self.prompt_len,))
        self.sampling = [Sampling()] * self.batch
        self.state = self.decoder.new_state()

    def prefill(self):
        cache, logits = self.decoder.extend(*self.state, self.prompts, [0] * self.batch)
        self.state = jax.block_until_ready((cache, logits))

    def decode(self):
        cache, logits = self.state
        out = self.decoder.decode(cache, logits, np.full(self.batch, self.prompt_len), np.ones(self.batch, bool),
                                  self.sampling, jax.random.key(0))
        self.tokens, reasons = jax.device_get((out.tokens, out.reason))
        assert (reasons == MAX_TOKENS).all(), f"rows stopped early: {reasons}"
        self.state = (out.cache, logits)  # the cache is donated to decode; prefill overwrites it next time

    def both(self):
        self.prefill()
        self.decode()


class HFRun:
    """Hugging Face greedy `generate` with its KV cache on the same weights, served by a child process.

    HF runs in a process of its own with a set number of torch threads, because on a shared 2-core CPU its
    OpenMP threads are fragile: with another busy process on the machine, 2 threads made a 4M model's
    generate ~16x slower than 1 thread (a barrier per op waits for a descheduled thread). The benchmark runs
    HF with each of `--torch-threads` and reports the fastest. A worker is idle while the others run; the time
    measured includes a pipe round trip (<1 ms).
    """

    def __init__(self, hf_dir: str, prompts: np.ndarray, threads: int):
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_hf_worker, args=(child, hf_dir, prompts, threads), daemon=True)
        self.process.start()
        self.conn.recv()  # loaded

    def generate(self, new: int):
        self.conn.send(new)
        self.tokens = self.conn.recv()

    def close(self):
        self.conn.send(None)
        self.process.join()


def _hf_worker(conn, hf_dir: str, prompts: np.ndarray, threads: int) -> None:
    """Load the HF model, then answer each requested token count with the generated tokens until told to stop."""
    import torch
    from transformers import LlamaForCausalLM

    torch.set_num_threads(threads)
    model = LlamaForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    ids = torch.as_tensor(prompts, dtype=torch.long)
    conn.send("ready")
    while (new := conn.recv()) is not None:
        with torch.inference_mode():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, use_cache=True,
                                 max_new_tokens=new, eos_token_id=None, pad_token_id=0, temperature=None,
                                 top_p=None, top_k=None)
        conn.send(out[:, ids.shape[1]:].numpy())


def agreement(a: np.ndarray, b: np.ndarray) -> dict:
    """Fraction of identical rows and of tokens before each row's first difference."""
    same = a == b
    prefix = np.where(same.all(axis=1), a.shape[1], np.argmin(same, axis=1))
    return dict(rows_identical=float(same.all(axis=1).mean()), tokens_agreeing=float(prefix.sum() / a.size),
                first_difference=int(prefix.min()))


def compare(model, tokenizer, hf_dir: str, batch: int, args) -> dict:
    """One preset and batch size: agentjax and HF (with each torch thread count) side by side."""
    prompts = np.random.RandomState(batch).randint(4, tokenizer.vocab_size, (batch, args.prompt))
    ours = AgentjaxRun(model, tokenizer, prompts, args.new, args.prompt + args.new)
    hfs = {n: HFRun(hf_dir, prompts, n) for n in args.torch_threads}
    fns = {"agentjax": ours.both, "agentjax_prefill": ours.prefill, "agentjax_decode": ours.decode}
    for n, hf in hfs.items():
        fns |= {f"hf_{n}t": lambda hf=hf: hf.generate(args.new), f"hf_first_{n}t": lambda hf=hf: hf.generate(1)}
    try:
        t = interleaved_medians(fns, args.repeats)
        for hf in hfs.values():
            hf.generate(args.new)
    finally:
        for hf in hfs.values():
            hf.close()
    threads = min(hfs, key=lambda n: t[f"hf_{n}t"])
    hf_s, hf_first_s = t[f"hf_{threads}t"], t[f"hf_first_{threads}t"]
    new_tokens = batch * args.new
    row = dict(
        batch=batch, prompt=args.prompt, new=args.new, hf_threads=threads,
        agentjax_tok_s=new_tokens / t["agentjax"], hf_tok_s=new_tokens / hf_s,
        agentjax_decode_tok_s=new_tokens / t["agentjax_decode"],
        hf_decode_tok_s=batch * (args.new - 1) / (hf_s - hf_first_s),
        agentjax_prefill_s=t["agentjax_prefill"], hf_prefill_plus_one_s=hf_first_s,
        hf_tok_s_by_threads={n: new_tokens / t[f"hf_{n}t"] for n in hfs}, seconds=t,
        **agreement(ours.tokens, hfs[threads].tokens),
    )
    assert all(np.array_equal(hf.tokens, hfs[threads].tokens) for hf in hfs.values()), "HF thread counts disagree"
    row["ratio"] = row["agentjax_tok_s"] / row["hf_tok_s"]
    row["decode_ratio"] = row["agentjax_decode_tok_s"] / row["hf_decode_tok_s"]
    return row


def cache_sweep(model, tokenizer, batch: int, cache_lens: list[int], args) -> list[dict]:
    """agentjax decode tokens/s for the same prompt and tokens with larger allocated caches."""
    prompts = np.random.RandomState(batch).randint(4, tokenizer.vocab_size, (batch, args.prompt))
    runs = {n: AgentjaxRun(model, tokenizer, prompts, args.new, n) for n in cache_lens}
    for run in runs.values():
        run.prefill()
    t = interleaved_medians({n: run.decode for n, run in runs.items()}, args.repeats)
    base = t[cache_lens[0]]
    return [dict(attention=model.config.attention, batch=batch, cache_len=n, decode_tok_s=batch * args.new / t[n], ms_per_step=1e3 * t[n] / args.new,
                 slowdown=t[n] / base) for n in cache_lens]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", default="small,100m", help="model presets (random init); small ~4M, 100m ~134M; '' for none")
    p.add_argument("--models", default="", help="agentjax model directories with their tokenizers (real weights)")
    p.add_argument("--batches", default="1,16")
    p.add_argument("--prompt", type=int, default=128)
    p.add_argument("--new", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--torch-threads", default="1,2", help="HF runs with each; the fastest is reported")
    p.add_argument("--cache-sweep", default="256,512,1024,2048", help="cache lengths for the first preset ('' skips)")
    p.add_argument("--attention", default="auto,reference", help="backends (model.attention); the first races HF")
    p.add_argument("--no-hf", action="store_true", help="only the cache sweep (no HF comparison)")
    p.add_argument("--out", default=str(BENCH_DIR / "decode_throughput.json"))
    args = p.parse_args()
    args.torch_threads = [int(n) for n in args.torch_threads.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    rows, sweep = [], []
    backends = args.attention.split(",")
    for i, (name, model, tokenizer) in enumerate(contestants(args)):
        model = with_attention(model, backends[0])
        with tempfile.TemporaryDirectory() as hf_dir:
            agentjax_to_hf(model, f"{hf_dir}/hf")
            for batch in [] if args.no_hf else batches:
                row = compare(model, tokenizer, f"{hf_dir}/hf", batch, args)
                rows.append(dict(preset=name, params_m=model.config.n_params / 1e6, **row))
                print(f"{name} batch {batch}: agentjax {row['agentjax_tok_s']:,.0f} tok/s, HF {row['hf_tok_s']:,.0f} tok/s",
                      flush=True)
        if i == 0 and args.cache_sweep:
            lens = sorted({max(int(n), args.prompt + args.new) for n in args.cache_sweep.split(",")})
            for backend in backends:
                sweep += [dict(preset=name, **r) for b in batches
                          for r in cache_sweep(with_attention(model, backend), tokenizer, b, lens, args)]
    if rows:
        print_table(f"Greedy decode, prompt {args.prompt} + {args.new} new tokens, float32, EOS ignored "
                    f"(median of {args.repeats}; decode = after the prefill)", rows, COLUMNS)
    if sweep:
        print_table("agentjax decode vs allocated cache length (same prompt and tokens)", sweep, [
            ("preset", "preset", ""), ("attention", "attention", ""), ("batch", "batch", "d"), ("cache_len", "cache", "d"),
            ("decode_tok_s", "decode tok/s", ",.0f"), ("ms_per_step", "ms/step", ".2f"), ("slowdown", "x", ".2f")])
    write_json(args.out, dict(benchmark="decode_throughput", rows=rows,
                              cache_sweep=sweep, args=vars(args)))


def with_attention(model: Llama, backend: str) -> Llama:
    """The same weights with another attention backend."""
    other = nnx.eval_shape(lambda: Llama(model.config.replace(attention=backend), rngs=nnx.Rngs(0)))
    nnx.update(other, nnx.state(model))
    return other


def contestants(args):
    """(name, model, tokenizer) for each preset (random init, the world's tokenizer) and each model directory."""
    if args.presets:
        tokenizer = world_tokenizer()
        for name in args.presets.split(","):
            cfg = preset(name, vocab_size=max(tokenizer.vocab_size, preset(name).vocab_size),
                         max_seq_len=max(2048, args.prompt + args.new))
            yield name, Llama(cfg, rngs=nnx.Rngs(0)), tokenizer
    for directory in filter(None, args.models.split(",")):
        yield Path(directory).name, load_checkpoint(directory), load_tokenizer(directory)


COLUMNS = [("preset", "preset", ""), ("params_m", "params (M)", ".1f"), ("batch", "batch", "d"),
           ("agentjax_tok_s", "agentjax tok/s", ",.0f"), ("hf_tok_s", "HF tok/s", ",.0f"), ("ratio", "ratio", ".1f"),
           ("agentjax_decode_tok_s", "aj decode tok/s", ",.0f"), ("hf_decode_tok_s", "HF decode tok/s", ",.0f"),
           ("decode_ratio", "decode ratio", ".1f"), ("hf_threads", "HF threads", "d"),
           ("tokens_agreeing", "greedy agree", ".0%")]


if __name__ == "__main__":
    main()
