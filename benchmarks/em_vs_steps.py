"""Held-out EM of the quickstart's fine-tuned agent against training steps: where more training gets it.

    python benchmarks/em_vs_steps.py [--steps 10,20,40,80] [--out runs/bench/em_vs_steps] [key=value ...]

One quickstart training run (SmolLM2-135M-Instruct fine-tuned on the world's teacher trajectories, the
quickstart's recipe; `key=value` changes it like `agentjax quickstart` does) goes to the last step, keeping a
checkpoint at every listed step; each checkpoint then plays the quickstart's held-out questions with the real
tool loop. The learning-rate schedule spans the whole run, so a point is "step k of this run", not "a k-step
run". Writes em_vs_steps.json and em_vs_steps.png (EM overall and per question kind, the share of
episodes that ran out of steps, and the training loss) into --out. Rerunning resumes (training and each
evaluation).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path

from matplotlib.figure import Figure

from common import BENCH_DIR, write_json
from agentjax import perf
from agentjax.agent.evaluate import evaluate
from agentjax.configlib import load, to_dict
from agentjax.quickstart import QuickstartConfig, eval_config, import_base, run_config, write_trajectories
from agentjax.train.metrics import read_metrics
from agentjax.train.trainer import train
from agentjax.util.atomic import atomic_write
from agentjax.world.build import build_world


def curve(cfg: QuickstartConfig, steps: list[int], out: Path) -> dict:
    """Train once to max(steps) keeping each listed step's checkpoint, then evaluate every one of them."""
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    base = import_base(cfg, out)
    world = build_world(cfg.world)
    sources = [{"path": str(write_trajectories(world, m, "train", out)), "format": "agentjax"} for m in cfg.methods]
    run = run_config(dataclasses.replace(cfg, steps=max(steps)), sources, out / "train", base=base)
    every = math.gcd(*steps)
    run = dataclasses.replace(run, train=dataclasses.replace(run.train, checkpoint_every=every,
                                                             keep_checkpoints=max(steps) // every))
    train(run)
    train_s = time.perf_counter() - t0
    points = []
    for step in steps:
        t0 = time.perf_counter()
        summary = evaluate(eval_config(cfg, out / f"eval-step{step}", run=out / "train", run_step=step), True)
        statuses = summary["statuses"]
        points.append(dict(step=step, em=summary["em"], f1=summary["f1"], n=summary["n"],
                           per_kind={k: v["em"] for k, v in summary["per_kind"].items()},
                           out_of_steps=100 * statuses.get("max_steps", 0) / summary["n"],
                           mean_steps=summary["mean_steps"], eval_s=time.perf_counter() - t0))
        print(f"step {step}: EM {summary['em']:.1f} on {summary['n']} questions "
              f"({points[-1]['out_of_steps']:.0f}% ran out of steps)", flush=True)
    result = dict(benchmark="em_vs_steps", points=points, train_s=train_s,
                  tokens_per_step=cfg.global_batch * cfg.seq_len, config=to_dict(cfg))
    write_json(out / "em_vs_steps.json", result)
    plot(result, read_metrics(out / "train"), out / "em_vs_steps.png")
    return result


def plot(result: dict, metrics: list[dict], path: Path) -> None:
    """Left: EM (overall and per kind) and out-of-steps share against step; right: the training loss."""
    points = result["points"]
    steps = [p["step"] for p in points]
    fig = Figure(figsize=(11, 4))
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(steps, [p["em"] for p in points], "o-", lw=2.5, color="black", label="EM, all questions")
    for kind in points[0]["per_kind"]:
        ax1.plot(steps, [p["per_kind"][kind] for p in points], ".--", lw=1, label=f"EM, {kind}")
    ax1.plot(steps, [p["out_of_steps"] for p in points], "s:", color="grey", label="episodes out of steps (%)")
    ax1.set(xlabel="training step", ylabel="%", title=f"held-out questions ({points[0]['n']}), real tool loop",
            ylim=(-2, 102))
    ax1.legend(fontsize=7)
    ax2.plot([m["step"] for m in metrics], [m["loss"] for m in metrics])
    ax2.set(xlabel="training step", ylabel="train loss (per supervised token)",
            title=f"{result['tokens_per_step']} tokens per step")
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", default="10,20,40,80", help="comma-separated training steps to evaluate")
    p.add_argument("--out", default=str(BENCH_DIR / "em_vs_steps"))
    p.add_argument("overrides", nargs="*", help="QuickstartConfig key=value changes")
    args = p.parse_args()
    perf.enable_compilation_cache()
    steps = sorted({int(s) for s in args.steps.split(",")})
    result = curve(load(QuickstartConfig, None, list(args.overrides)), steps, Path(args.out))
    print(json.dumps([{k: p[k] for k in ("step", "em", "out_of_steps", "eval_s")} for p in result["points"]]))


if __name__ == "__main__":
    main()
