"""FireAct on its released data, on a CPU: SmolLM2-135M-Instruct prompted vs fine-tuned, single-task vs
multi-task multi-method, on HotpotQA dev with the offline recorded search.

    python benchmarks/fireact_smollm2.py [--limit prompted=50 --limit multitask-multimethod=100 ...]
        [--out benchmarks/results]

Runs (or resumes) the recipes' own commands in order, each from its YAML in configs/fireact/:
  1. `agentjax convert gguf-to-agentjax smollm2-135m $AGENTJAX_MODELS/smollm2-135m` (once);
  2. the prompted base on the first dev questions (50 by default: its replies run to the token budget);
  3. per variant, `agentjax train` on FireAct's trajectories, then `agentjax eval` on the dev questions (all 500 by
     default; `--limit NAME=N` plays the first N, for the prompted base or a variant).
An evaluation whose summary.json already covers its questions is read, not rerun, so rerunning after a finished
run only collects. Writes fireact-smollm2.json and fireact-smollm2.png: EM and F1 per model on the questions it
played, on the prompted base's and on those every fine-tuned model played, and the training losses. Needs
$AGENTJAX_DATA/fireact/.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from matplotlib.figure import Figure

from common import write_json
from agentjax import perf
from agentjax.agent.config import EvalConfig
from agentjax.agent.evaluate import SUMMARY, TRANSCRIPTS, evaluate, read_transcripts
from agentjax.configlib import load
from agentjax.model import gguf_import
from agentjax.train.config import RunConfig
from agentjax.train.metrics import read_metrics
from agentjax.train.trainer import train
from agentjax.util.atomic import atomic_write

RECIPES = Path(__file__).resolve().parents[1] / "configs" / "fireact"
VARIANTS = {"hotpotqa": "smollm2-135m-hotpotqa.yaml", "multitask-multimethod": "smollm2-135m-multitask-multimethod.yaml"}
EVAL, PROMPTED = "eval-hotpotqa-recorded-smollm2.yaml", "eval-hotpotqa-recorded-smollm2-prompted.yaml"


def evaluation(cfg: EvalConfig, n_expected: int) -> tuple[dict, list[dict]]:
    """The summary and episodes of `cfg`'s evaluation: read when complete, else run (resuming)."""
    out = Path(cfg.output_dir)
    done = json.loads((out / SUMMARY).read_text()) if (out / SUMMARY).exists() else None
    if done is None or done["n"] < n_expected:
        done = evaluate(cfg)
    return done, read_transcripts(out / TRANSCRIPTS)


def scores_on(records: list[dict], ids: set[str]) -> dict:
    """EM and F1 (%) over the episodes whose question id is in `ids`."""
    chosen = [r for r in records if r["id"] in ids]
    return {"n": len(chosen), **{m: 100 * sum(r["scores"][m] for r in chosen) / max(len(chosen), 1)
                                 for m in ("em", "f1")}}


def train_seconds(metrics: list[dict], tokens_per_step: int) -> float:
    """Training time from the logged throughput (each logged rate covers the steps since the previous log)."""
    seconds, last = 0.0, 0
    for m in metrics:
        seconds += (m["step"] - last) * tokens_per_step / m["tokens_per_s"]
        last = m["step"]
    return seconds


def model_row(name: str, summary: dict, records: list[dict], **extra) -> dict:
    """One model's figures on every question it played."""
    return dict(name=name, em=summary["em"], f1=summary["f1"], n=summary["n"], statuses=summary["statuses"],
                per_kind=summary["per_kind"], mean_steps=summary["mean_steps"], tool_calls=summary.get("tool_calls", {}),
                ids={r["id"] for r in records}, records=records, **extra)


def run(limits: dict[str, int], out: Path) -> dict:
    """Every step in order; returns the result written to out/fireact-smollm2.json."""
    t0 = time.perf_counter()
    base = Path(load(RunConfig, str(RECIPES / VARIANTS["hotpotqa"]), []).model.checkpoint)
    if not (base / "config.json").is_file():
        gguf_import.gguf_to_agentjax(gguf_import.resolve("smollm2-135m"), base)
    prompted_cfg = load(EvalConfig, str(RECIPES / PROMPTED), [f"limit={limits['prompted']}"])
    prompted, prompted_records = evaluation(prompted_cfg, limits["prompted"])
    rows = [model_row("prompted", prompted, prompted_records)]
    losses = {}
    for name, recipe in VARIANTS.items():
        run_cfg = load(RunConfig, str(RECIPES / recipe), [])
        result = train(run_cfg)
        metrics = [m for m in read_metrics(run_cfg.output_dir) if "loss" in m]
        losses[name] = [(m["step"], m["loss"]) for m in metrics]
        tokens_per_step = run_cfg.train.global_batch * run_cfg.data.seq_len
        run_dir = Path(run_cfg.output_dir)
        eval_cfg = load(EvalConfig, str(RECIPES / EVAL), [f"run={run_dir}", f"output_dir={run_dir / 'eval-hotpotqa-recorded'}",
                                                          f"limit={limits[name]}"])
        summary, records = evaluation(eval_cfg, limits[name])
        rows.append(model_row(
            f"fine-tuned, {name}", summary, records, train_steps=result.final_step,
            train_tokens_per_s=sum(m["tokens_per_s"] for m in metrics) / len(metrics),
            train_s=train_seconds(metrics, tokens_per_step), eval_s=summary["seconds"]))
    prompted_ids, fine_tuned_common = rows[0]["ids"], set.intersection(*(r["ids"] for r in rows[1:]))
    for row in rows:
        row["on_prompted_questions"] = scores_on(row["records"], prompted_ids)
        row["on_fine_tuned_common_questions"] = scores_on(row["records"], fine_tuned_common)
        del row["ids"], row["records"]
    result = dict(benchmark="fireact_smollm2", models=rows, prompted_eval_s=prompted["seconds"],
                  losses=losses, wall_s_this_invocation=time.perf_counter() - t0)
    write_json(out / "fireact-smollm2.json", result)
    plot(result, out / "fireact-smollm2.png")
    return result


def plot(result: dict, path: Path) -> None:
    """Left: EM and F1 per model on its questions, EM on the shared ones; right: training losses."""
    rows = result["models"]
    fig = Figure(figsize=(12, 4.2))
    ax1, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    width, xs = 0.2, range(len(rows))
    bars = [("EM", lambda r: r["em"]), ("F1", lambda r: r["f1"]),
            ("EM on the prompted base's questions", lambda r: r["on_prompted_questions"]["em"]),
            ("EM on the questions every fine-tuned model played", lambda r: r["on_fine_tuned_common_questions"]["em"])]
    for i, (label, value) in enumerate(bars):
        heights = [value(r) for r in rows]
        ax1.bar([x + (i - 1.5) * width for x in xs], heights, width, label=label, hatch="//" if i >= 2 else None)
        for x, h in zip(xs, heights):
            ax1.text(x + (i - 1.5) * width, h + 0.5, f"{h:.1f}", ha="center", fontsize=7)
    ax1.set_xticks(list(xs), [f"{r['name']}\n(n={r['n']})" for r in rows], fontsize=8)
    top = max(max(value(r) for r in rows) for _, value in bars)
    ax1.set(ylabel="%", title="HotpotQA dev, offline recorded search, SmolLM2-135M-Instruct", ylim=(0, 1.45 * top + 1))
    ax1.legend(fontsize=7, loc="upper left")
    for name, points in result["losses"].items():
        ax2.plot([s for s, _ in points], [l for _, l in points], label=name)
    ax2.set(xlabel="training step", ylabel="train loss (per supervised token)", title="fine-tuning")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--limit", action="append", default=[], metavar="NAME=N",
                   help=f"the first N dev questions for NAME (prompted, {', '.join(VARIANTS)}); default prompted=50, "
                        "the variants all 500")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = p.parse_args()
    perf.enable_compilation_cache()
    limits = {"prompted": 50, **{name: 500 for name in VARIANTS}}
    for item in args.limit:
        name, _, n = item.partition("=")
        if name not in limits or not n.isdigit():
            p.error(f"--limit {item}: expected NAME=N with NAME one of {', '.join(limits)}")
        limits[name] = int(n)
    result = run(limits, Path(args.out))
    for row in result["models"]:
        print(f"{row['name']:<36} EM {row['em']:5.1f} F1 {row['f1']:5.1f} on {row['n']}; on the prompted base's "
              f"{row['on_prompted_questions']['n']}: EM {row['on_prompted_questions']['em']:.1f}; on the fine-tuned "
              f"models' {row['on_fine_tuned_common_questions']['n']}: EM {row['on_fine_tuned_common_questions']['em']:.1f}")


if __name__ == "__main__":
    main()
