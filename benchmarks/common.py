"""Helpers shared by the agent benchmarks: the machine's description, tables, JSON output, a small tokenizer.

Not a benchmark itself; imported by benchmarks/decode_throughput.py, tool_turn_cost.py and eval_episodes.py.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable, Sequence

import jax

from agentjax.data.templates import template_markers
from agentjax.data.tokenizer import Tokenizer, load_tokenizer, train_sentencepiece
from agentjax.util.atomic import atomic_write

BENCH_DIR = Path(__file__).resolve().parents[1] / "runs" / "bench"


def environment() -> dict:
    """What the numbers were measured on, including how busy the machine was (the CPU may be shared)."""
    return dict(platform=jax.devices()[0].platform, device_kind=jax.devices()[0].device_kind,
                devices=jax.device_count(), cpu_count=os.cpu_count(), machine=platform.machine(),
                python=platform.python_version(), jax=jax.__version__, load_average_1m=os.getloadavg()[0])


def interleaved_times(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Wall seconds of each `fn()` (which must block until done) per repeat, after `warmup` calls each.

    Alternating the contestants within each repeat spreads any load from other processes over all of them.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def interleaved_medians(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median wall seconds of each `fn()` over `repeats` interleaved runs (see interleaved_times)."""
    return {name: statistics.median(ts) for name, ts in interleaved_times(fns, repeats, warmup).items()}


def print_table(title: str, rows: Sequence[dict], columns: Sequence[tuple[str, str, str]]) -> None:
    """Print `rows` under `title`; columns are (key, header, format spec), e.g. ("tok_s", "tokens/s", ",.0f")."""
    cells = [[format(r[key], spec) if r.get(key) is not None else "-" for key, _, spec in columns] for r in rows]
    widths = [max(len(header), *(len(c[i]) for c in cells)) for i, (_, header, _) in enumerate(columns)]
    print(f"\n{title}")
    print("  ".join(header.rjust(w) for (_, header, _), w in zip(columns, widths)))
    print("  ".join("-" * w for w in widths))
    for c in cells:
        print("  ".join(v.rjust(w) for v, w in zip(c, widths)))


def write_json(path: str | Path, result: dict) -> None:
    """Write `result` (plus the environment) as indented JSON, atomically, creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        f.write(json.dumps({**result, "environment": environment()}, indent=2) + "\n")
    print(f"\nwrote {path}")


def world_tokenizer(vocab_size: int = 2048, cache_dir: Path = BENCH_DIR) -> Tokenizer:
    """A sentencepiece tokenizer trained on the generated world's training documents (made once, then reused)."""
    path = Path(cache_dir) / f"world-tokenizer-{vocab_size}.model"
    if not path.exists():
        from agentjax.world.build import build_world

        documents = build_world().documents("train")
        path.parent.mkdir(parents=True, exist_ok=True)
        train_sentencepiece([text for docs in documents.values() for text in docs], vocab_size, path, user_symbols=template_markers())
    return load_tokenizer(path)
