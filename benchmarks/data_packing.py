"""Packing efficiency on FireAct multitask_multimethod (seq_len 2048 and 4096) against plain padding, and the
tf.data pipeline's throughput and restore cost. Prints a table and writes JSON (default runs/bench/data_packing.json).

    python benchmarks/data_packing.py [--data ../shared/data] [--vocab-size 8000] [--batches 150] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from agentjax.configlib import from_dict  # noqa: E402
from agentjax.util.atomic import atomic_write  # noqa: E402
from agentjax.data.config import DataConfig  # noqa: E402
from agentjax.data.formats import read_conversations  # noqa: E402
from agentjax.data.stats import epoch_stats  # noqa: E402
from agentjax.data.templates import template_markers  # noqa: E402
from agentjax.data.tokenizer import train_sentencepiece  # noqa: E402

FILE = "fireact/finetune/gpt_format/multitask_multimethod.jsonl"


def batch_padding_efficiency(lengths: list[int], batch: int, seed: int = 0) -> float:
    """Tokens / slots when shuffled examples are batched and each batch is padded to its longest example."""
    order = np.random.default_rng(seed).permutation(len(lengths))
    sizes = np.asarray(lengths)[order]
    slots = sum(int(chunk.max()) * len(chunk) for chunk in np.array_split(sizes, range(batch, len(sizes), batch)))
    return float(sizes.sum() / slots)


def throughput(config: DataConfig, tokenizer, global_batch: int, batches: int) -> dict:
    """Real tokens/s and row slots/s of the tf.data pipeline after its first batch; restore cost mid-stream."""
    from agentjax.data.pipeline import Pipeline

    start = time.perf_counter()
    pipeline = Pipeline(config, tokenizer, global_batch)
    it = iter(pipeline)
    next(it)
    first = time.perf_counter() - start
    t0, tokens = time.perf_counter(), 0
    for _ in range(batches):
        tokens += int((next(it)["segment_ids"] > 0).sum())
    elapsed = time.perf_counter() - t0
    state = json.loads(json.dumps(pipeline.state()))
    expected = next(it)
    it.close()  # stop the first pipeline's prefetching so it does not compete with the restore being timed
    t1 = time.perf_counter()
    resumed = Pipeline(config, tokenizer, global_batch)
    resumed.restore(state)
    after_restore = next(iter(resumed))
    restore_s = time.perf_counter() - t1
    assert all(np.array_equal(after_restore[k], v) for k, v in expected.items()), "restore did not resume exactly"
    return {"global_batch": global_batch, "seq_len": config.seq_len, "batches": batches, "first_batch_s": first,
            "tokens_per_s": tokens / elapsed, "slots_per_s": batches * global_batch * config.seq_len / elapsed,
            "restore_to_next_batch_s": restore_s, "state_bytes": len(json.dumps(state))}


def main() -> None:
    """Measure, print the tables, write the JSON."""
    here = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("AGENTJAX_SHARED_DATA", str(here.parent / "shared" / "data")))
    parser.add_argument("--vocab-size", type=int, default=8000, help="tokenizer trained on the fly on the same file")
    parser.add_argument("--batches", type=int, default=150, help="batches timed for throughput")
    parser.add_argument("--global-batch", type=int, default=8)
    parser.add_argument("--out", default=str(here / "runs" / "bench" / "data_packing.json"))
    args = parser.parse_args()

    path = Path(args.data) / FILE
    texts = [t.content for c in read_conversations(path, "fireact") for t in c.turns]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = train_sentencepiece(texts, args.vocab_size, Path(tmp) / "tokenizer.model", user_symbols=template_markers())
    train_s = time.perf_counter() - t0
    chars_per_token = sum(map(len, texts)) / sum(len(tokenizer.encode(t)) for t in texts)

    rows = []
    for seq_len in (2048, 4096):
        config = from_dict(DataConfig, {"sources": [{"path": str(path), "format": "fireact"}], "seq_len": seq_len})
        stats = epoch_stats(config, tokenizer)
        from agentjax.data.stream import RowStream, without_untrained_tail  # lengths as the pipeline renders them

        stream = RowStream.from_config(config, tokenizer)
        lengths = [len(stream.template.encode(without_untrained_tail(c, stream.template)).ids) - 1
                   for c in stream.sources[0].conversations]
        fitting = [n for n in lengths if n <= seq_len]
        rows.append({"seq_len": seq_len, "examples": stats["examples"], "dropped_too_long": stats["dropped"].get("too_long", 0),
                     "rows_packed": stats["rows"], "packing_efficiency": stats["packing_efficiency"],
                     "padding_efficiency": stats["padding_efficiency"],
                     "batch_padding_efficiency": batch_padding_efficiency(fitting, args.global_batch),
                     "supervised_share": stats["supervised_share"]})
    speed = [throughput(from_dict(DataConfig, {"sources": [{"path": str(path), "format": "fireact"}], "seq_len": seq_len}),
                        tokenizer, args.global_batch, args.batches) for seq_len in (2048, 4096)]

    print(f"FireAct multitask_multimethod, tokenizer: BPE vocab {tokenizer.vocab_size} trained on the fly in {train_s:.1f}s "
          f"({chars_per_token:.2f} chars/token)")
    print(f"{'seq_len':>7} {'examples':>8} {'dropped':>7} {'rows':>5} {'packed':>8} {'pad->seq_len':>12} {'pad->batch max':>14}")
    for r in rows:
        print(f"{r['seq_len']:>7} {r['examples']:>8} {r['dropped_too_long']:>7} {r['rows_packed']:>5} {r['packing_efficiency']:>8.2%} "
              f"{r['padding_efficiency']:>12.2%} {r['batch_padding_efficiency']:>14.2%}")
    print(f"{'seq_len':>7} {'batch':>5} {'tokens/s':>10} {'first batch':>11} {'restore->next':>13} {'state':>6}")
    for s in speed:
        print(f"{s['seq_len']:>7} {s['global_batch']:>5} {s['tokens_per_s']:>10,.0f} {s['first_batch_s']:>10.2f}s "
              f"{s['restore_to_next_batch_s']:>12.2f}s {s['state_bytes']:>5}B")
    result = {"benchmark": "data_packing", "file": FILE, "vocab_size": tokenizer.vocab_size, "chars_per_token": chars_per_token,
              "tokenizer_train_s": train_s, "packing": rows, "pipeline": speed,
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}}
    with atomic_write(args.out) as f:
        json.dump(result, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
