"""`agentjax experiment NAME`: the papers' comparisons, small, on the generated world.

Every variant fine-tunes the quickstart's base model (SmolLM2-135M-Instruct, or with --from-scratch the random
~4M model: ~30 CPU minutes for all) for the same number of steps on a different data recipe, then plays the same
held-out questions with the same tool loop:
  prompting   the base prompted with the tools and two teacher trajectories, vs fine-tuned (FireAct)
  methods     ReAct trajectories only, vs ReAct + CoT + Reflexion mixed (FireAct's multi-method)
  nat         successes only, vs successes + failures as plain data, vs failures labeled by outcome (NAT)
  mixing      agent data only, vs agent data mixed with general chat (AgentTuning), plus held-out chat loss
Writes experiments/<NAME>/results.json and results.png; variants shared by several experiments run once.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.figure import Figure

from agentjax.agent.evaluate import evaluate
from agentjax.configlib import ConfigError, load, to_dict
from agentjax.data.tokenizer import find_tokenizer
from agentjax.quickstart import (QuickstartConfig, eval_config, import_base, preset_overrides, prompted_system_prompt,
                                 run_config, valid_share, write_trajectories)
from agentjax.train.metrics import read_metrics
from agentjax.train.trainer import train
from agentjax.util.atomic import atomic_write
from agentjax.util.records import read_json
from agentjax.world.build import build_world


@dataclass(frozen=True)
class Variant:
    """A data recipe: teacher methods with sampling weights, and NAT conditioning or not."""

    label: str
    methods: dict[str, float] = field(default_factory=dict)  # method -> weight; empty: not fine-tuned
    conditioning: bool = False  # label each trajectory with its outcome; ask for success at inference
    few_shot: bool = False  # system prompt of the tools and two teacher trajectories (for the untrained model)


NAT_CONDITIONING = {"mode": "binary", "placement": "prefix"}
VARIANTS = {
    "untrained-few-shot": Variant("not fine-tuned, 2-shot prompt", few_shot=True),
    "react": Variant("ReAct successes only", {"react": 1.0}),
    "multimethod": Variant("ReAct + CoT + Reflexion", {"react": 1.0, "cot": 1.0, "reflexion": 1.0}),
    "with-failures": Variant("successes + failures, unlabeled", {"react": 1.0, "noisy": 1.0}),
    "nat": Variant("successes + failures, outcome-labeled (NAT)", {"react": 1.0, "noisy": 1.0}, conditioning=True),
    "general-mix": Variant("ReAct + general chat (eta 0.5)", {"react": 0.5, "general": 0.5}),
}
EXPERIMENTS = {
    "prompting": ["untrained-few-shot", "react"],
    "methods": ["react", "multimethod"],
    "nat": ["react", "with-failures", "nat"],
    "mixing": ["react", "general-mix"],
}


def run_variant(name: str, cfg: QuickstartConfig, world, out: Path, progress: bool, base: Path | None) -> dict:
    """Train (unless untrained) and evaluate one variant; results are cached in out/variants/<name>/result.json."""
    variant, where = VARIANTS[name], out / "variants" / name
    done, config = where / "result.json", json.loads(json.dumps(to_dict(cfg)))
    if done.exists():
        result = read_json(done)
        if result.get("config") != config:
            raise ConfigError(f"{where} holds variant {name!r} from a run with another config; "
                              "use a fresh --out to compare under this one")
        return result
    t0 = time.perf_counter()
    conditioning = NAT_CONDITIONING if variant.conditioning else None
    if variant.methods:
        sources = [{"path": str(write_trajectories(world, m, "train", out)), "format": "agentjax", "weight": w}
                   for m, w in variant.methods.items()]
        held_out = [{"path": str(write_trajectories(world, "general", "dev", out)), "format": "agentjax"}]
        train(run_config(cfg, sources, where / "train", conditioning, held_out, base))
        evaluation = eval_config(cfg, where / "eval", run=where / "train",
                                 **({"conditioning": conditioning} if conditioning else {}))
        held_out_loss = read_metrics(where / "train")[-1].get("held_out_loss")
    else:
        tokenizer = out / "variants" / "react" / "train" if cfg.from_scratch else None
        if tokenizer is not None and find_tokenizer(tokenizer) is None:
            run_variant("react", cfg, world, out, progress, base)  # from scratch, its run trains the tokenizer
            t0 = time.perf_counter()  # training the react variant is that variant's time, not this one's
        evaluation = eval_config(cfg, where / "eval", tokenizer=tokenizer, base=base,
                                 system_prompt_file=str(prompted_system_prompt(world, cfg, out)))
        held_out_loss = None
    summary = evaluate(evaluation, progress)
    result = dict(variant=name, label=variant.label, em=summary["em"], f1=summary["f1"],
                  per_kind={k: v["em"] for k, v in summary["per_kind"].items()},
                  valid_tool_calls=valid_share(summary), steps_per_episode=summary["mean_steps"],
                  held_out_chat_loss=held_out_loss, minutes=(time.perf_counter() - t0) / 60, config=config)
    with atomic_write(done) as f:
        f.write(json.dumps(result, indent=2) + "\n")
    return result


def run_experiment(name: str, cfg: QuickstartConfig, out: Path, progress: bool = True) -> list[dict]:
    """Run (or reuse) each variant of experiment `name` ("all": every variant once); writes results.json + png."""
    base = None if cfg.from_scratch else import_base(cfg, out)
    world = build_world(cfg.world)
    names = sorted({v for e in EXPERIMENTS.values() for v in e}, key=list(VARIANTS).index) if name == "all" \
        else EXPERIMENTS[name]
    results = [{k: v for k, v in run_variant(variant, cfg, world, out, progress, base).items() if k != "config"}
               for variant in names]
    target = out / name
    target.mkdir(parents=True, exist_ok=True)
    with atomic_write(target / "results.json") as f:
        f.write(json.dumps({"experiment": name, "results": results, "config": to_dict(cfg)}, indent=2) + "\n")
    plot(results, target / "results.png", name)
    return results


def format_table(results: list[dict]) -> str:
    rows = [f"{'variant':<46}{'EM':>7}{'F1':>7}{'valid calls':>13}{'steps':>7}{'chat loss':>11}{'min':>6}", "-" * 97]
    for r in results:
        loss = f"{r['held_out_chat_loss']:.3f}" if r["held_out_chat_loss"] is not None else "-"
        rows.append(f"{r['label']:<46}{r['em']:>7.1f}{r['f1']:>7.1f}{r['valid_tool_calls']:>12.0f}%"
                    f"{r['steps_per_episode']:>7.2f}{loss:>11}{r['minutes']:>6.1f}")
    return "\n".join(rows)


def plot(results: list[dict], path: Path, name: str) -> None:
    """EM per question kind (and overall) of each variant, as grouped bars."""
    kinds = sorted({k for r in results for k in r["per_kind"]})
    fig = Figure(figsize=(max(6, 1.6 * len(kinds) + 2), 4))
    ax = fig.subplots()
    width = 0.8 / len(results)
    for i, r in enumerate(results):
        xs = [j + i * width for j in range(len(kinds) + 1)]
        ax.bar(xs, [r["per_kind"].get(k, 0.0) for k in kinds] + [r["em"]], width, label=r["label"])
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(kinds) + 1)], kinds + ["all"])
    ax.set(ylabel="exact match (%)", title=f"experiment '{name}': held-out world questions")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", choices=[*EXPERIMENTS, "all"])
    parser.add_argument("--out", default="runs/experiments", help="output directory (variants are reused)")
    parser.add_argument("--config", default=None, help="YAML QuickstartConfig (model, steps, questions)")
    parser.add_argument("--from-scratch", action="store_true", help="the quickstart's random small model as the base")
    parser.add_argument("overrides", nargs="*", help="key=value changes to the quickstart config")


def run(args) -> int:
    cfg = load(QuickstartConfig, args.config, preset_overrides(args.from_scratch, False) + list(args.overrides))
    results = run_experiment(args.name, cfg, Path(args.out))
    print(format_table(results))
    print(f"wrote {args.out}/{args.name}/results.json and results.png")
    return 0
