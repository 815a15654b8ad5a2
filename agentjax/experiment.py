"""`agentjax experiment NAME`: the papers' comparisons, small, on the generated world, each over several seeds.

Every variant fine-tunes the quickstart's base model (SmolLM2-135M-Instruct, or with --from-scratch the random
~4M model) for the same number of steps on a different data recipe, then plays the same held-out questions with
the same tool loop:
  prompting   the base prompted with the tools and two teacher trajectories, vs fine-tuned (FireAct)
  methods     ReAct trajectories only, vs ReAct + CoT + Reflexion mixed (FireAct's multi-method)
  nat         successes only, vs successes + failures as plain data, vs failures labeled by outcome (NAT)
  mixing      agent data only, vs mixed with general chat at eta 0.2 and 0.5 (AgentTuning): held-out chat loss,
              and MMLU accuracy (option-letter likelihood) beside the untouched base's
  agentflan   ReAct format, vs natural chat format with no-tool negatives (Agent-FLAN): tool hallucination rate
Each fine-tuned variant runs once per seed (data order, initialisation); the untrained one once (greedy decoding
of an unchanged model gives the same episodes whatever the seed). Writes experiments/<NAME>/results.json and
results.png (means with the seeds' standard deviation); a variant's run per seed is kept and reused.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.figure import Figure

from agentjax.agent.choice import choice_accuracy, spread
from agentjax.agent.config import EvalConfig
from agentjax.agent.evaluate import TRANSCRIPTS, evaluate, load_model_and_tokenizer, read_transcripts
from agentjax.agent.methods import TOOLS_PLACEHOLDER
from agentjax.configlib import ConfigError, load, expand_env, to_dict
from agentjax.data.templates import get_template
from agentjax.data.tokenizer import find_tokenizer
from agentjax.quickstart import (QuickstartConfig, eval_config, import_base, preset_overrides, prompted_system_prompt,
                                 run_config, valid_share, write_trajectories)
from agentjax.sharding import make_mesh
from agentjax.tasks.mmlu import MMLU
from agentjax.train.metrics import read_metrics
from agentjax.train.trainer import train
from agentjax.util.atomic import atomic_write
from agentjax.util.records import read_json
from agentjax.world.build import build_world
from agentjax.world.hallucination import hallucination_rates
from agentjax.world.trajectory_format import chat_system_prompt


@dataclass(frozen=True)
class Variant:
    """A data recipe: teacher methods with sampling weights, NAT conditioning or not, ReAct or chat format."""

    label: str
    methods: dict[str, float] = field(default_factory=dict)  # method -> weight; empty: not fine-tuned
    conditioning: bool = False  # label each trajectory with its outcome; ask for success at inference
    few_shot: bool = False  # system prompt of the tools and two teacher trajectories (for the untrained model)
    chat: bool = False  # chat format: the tools listed in the system turn, the answer stated in a plain reply


NAT_CONDITIONING = {"mode": "binary", "placement": "prefix"}
VARIANTS = {
    "untrained-few-shot": Variant("not fine-tuned, 2-shot prompt", few_shot=True),
    "react": Variant("ReAct successes only", {"react": 1.0}),
    "multimethod": Variant("ReAct + CoT + Reflexion", {"react": 1.0, "cot": 1.0, "reflexion": 1.0}),
    "with-failures": Variant("successes + failures, unlabeled", {"react": 1.0, "noisy": 1.0}),
    "nat": Variant("successes + failures, outcome-labeled (NAT)", {"react": 1.0, "noisy": 1.0}, conditioning=True),
    "general-0.2": Variant("ReAct + general chat (eta 0.2)", {"react": 0.8, "general": 0.2}),
    "general-0.5": Variant("ReAct + general chat (eta 0.5)", {"react": 0.5, "general": 0.5}),
    # chat has one conversation per tool-using question (4 kinds), no_tool two per direct question: weights 2:1
    # keep every question kind as common as in the ReAct data
    "agentflan": Variant("chat format + no-tool negatives (Agent-FLAN)", {"chat": 2.0, "no_tool": 1.0}, chat=True),
}


@dataclass(frozen=True)
class Experiment:
    variants: tuple[str, ...]
    measures: tuple[str, ...] = ()  # beyond held-out EM: "mmlu", "hallucination"


EXPERIMENTS = {
    "prompting": Experiment(("untrained-few-shot", "react")),
    "methods": Experiment(("react", "multimethod")),
    "nat": Experiment(("react", "with-failures", "nat")),
    "mixing": Experiment(("react", "general-0.2", "general-0.5"), ("mmlu",)),
    "agentflan": Experiment(("react", "agentflan"), ("hallucination",)),
}


@dataclass(frozen=True)
class MMLUSettings:
    """Where FireAct's MMLU copy is and how many of its test questions to ask (spread over the subjects)."""

    path: str = "${AGENTJAX_DATA:-data}/fireact/mmlu"
    questions: int = 1000

    def load(self):
        path = Path(expand_env(self.path))
        if not (path / "test").is_dir():
            raise ConfigError(f"MMLU: {path}/test/ not found; point --mmlu at FireAct's data/mmlu folder "
                              "(its test/*.csv files)")
        return spread(MMLU().load(path, "test"), self.questions)


def eval_changes(variant: Variant) -> dict:
    """What a variant's evaluation changes: a chat-format agent sees its episode's tools and states its answer."""
    return {"system_prompt": chat_system_prompt(TOOLS_PLACEHOLDER), "reply_without_action": "answer"} \
        if variant.chat else {}


def run_variant(name: str, cfg: QuickstartConfig, world, out: Path, progress: bool, base: Path | None,
                measures: tuple[str, ...] = (), mmlu: MMLUSettings = MMLUSettings()) -> dict:
    """Train (unless untrained) and evaluate one variant at `cfg.seed`, plus any `measures`; every result is cached in
    out/variants/<name>/seed<seed>/result.json, and a later call adds only the measures it lacks."""
    variant = VARIANTS[name]
    where = out / "variants" / name / (f"seed{cfg.seed}" if variant.methods else "untrained")
    done, config = where / "result.json", json.loads(json.dumps(to_dict(cfg)))
    if done.exists():
        result = read_json(done)
        if result.get("config") != config:
            raise ConfigError(f"{where} holds variant {name!r} from a run with another config; "
                              "use a fresh --out to compare under this one")
    else:
        result = dict(variant=name, label=variant.label, seed=cfg.seed,
                      **play(name, variant, cfg, world, out, where, progress, base), config=config)
    if "hallucination" in measures and "hallucination" not in result:
        summary = evaluate(eval_config(cfg, where / "eval-hallucination", task="world-hallucination",
                                       **model_source(name, cfg, world, out, where, base), **eval_changes(variant)),
                           progress)
        result["hallucination"] = hallucination_rates(read_transcripts(where / "eval-hallucination" / TRANSCRIPTS))
        result["hallucination_em"] = summary["em"]
    if "mmlu" in measures and result.get("mmlu", {}).get("n") != mmlu.questions:
        result["mmlu"] = mmlu_accuracy(mmlu, eval_config(cfg, where / "eval", **model_source(name, cfg, world, out,
                                                                                           where, base)), progress)
    with atomic_write(done) as f:
        f.write(json.dumps(result, indent=2) + "\n")
    return result


def scratch_tokenizer(cfg: QuickstartConfig, out: Path) -> Path | None:
    """From scratch, the tokenizer an untrained model reads with: the one the react variant's run at cfg.seed trains."""
    return out / "variants" / "react" / f"seed{cfg.seed}" / "train" if cfg.from_scratch else None


def model_source(name: str, cfg: QuickstartConfig, world, out: Path, where: Path, base: Path | None) -> dict:
    """The eval config keys that name a variant's model: its training run, or the untrained base (prompted)."""
    variant = VARIANTS[name]
    if variant.methods:
        return {"run": where / "train"}
    tokenizer = scratch_tokenizer(cfg, out)
    if tokenizer is not None and find_tokenizer(tokenizer) is None:
        raise ConfigError(f"{tokenizer} has no tokenizer yet: the from-scratch untrained variant uses the one "
                          "the react variant trains")
    return {"tokenizer": tokenizer, "base": base, "system_prompt_file": str(prompted_system_prompt(world, cfg, out))}


def play(name: str, variant: Variant, cfg: QuickstartConfig, world, out: Path, where: Path, progress: bool,
         base: Path | None) -> dict:
    """Fine-tune the variant (if it is trained) and play the held-out questions: EM, F1, per kind, valid calls."""
    t0 = time.perf_counter()
    conditioning = NAT_CONDITIONING if variant.conditioning else None
    held_out_loss = None
    if variant.methods:
        sources = [{"path": str(write_trajectories(world, m, "train", out)), "format": "agentjax", "weight": w}
                   for m, w in variant.methods.items()]
        held_out = [{"path": str(write_trajectories(world, "general", "dev", out)), "format": "agentjax"}]
        train(run_config(cfg, sources, where / "train", conditioning, held_out, base))
        held_out_loss = read_metrics(where / "train")[-1].get("held_out_loss")
    elif cfg.from_scratch:  # the untrained random model reads with the tokenizer the react variant trains
        run_variant("react", cfg, world, out, progress, base)
        t0 = time.perf_counter()
    summary = evaluate(eval_config(cfg, where / "eval", **model_source(name, cfg, world, out, where, base),
                                   **({"conditioning": conditioning} if conditioning else {}), **eval_changes(variant)),
                       progress)
    return dict(em=summary["em"], f1=summary["f1"], per_kind={k: v["em"] for k, v in summary["per_kind"].items()},
                valid_tool_calls=valid_share(summary), steps_per_episode=summary["mean_steps"],
                held_out_chat_loss=held_out_loss, minutes=(time.perf_counter() - t0) / 60)


def mmlu_accuracy(mmlu: MMLUSettings, evaluation: EvalConfig, progress: bool) -> dict:
    """MMLU accuracy (%) of the model `evaluation` names (a run or a base), read with its own template."""
    t0 = time.perf_counter()
    evaluation = evaluation.with_run_defaults()
    model, tokenizer = load_model_and_tokenizer(evaluation, make_mesh(evaluation.mesh))
    template = get_template(evaluation.template, tokenizer, **evaluation.template_options)
    return {**choice_accuracy(model, template, mmlu.load(), progress=progress),
            "minutes": (time.perf_counter() - t0) / 60}


def base_mmlu(mmlu: MMLUSettings, cfg: QuickstartConfig, out: Path, base: Path | None, progress: bool) -> dict:
    """The untouched base model's MMLU accuracy, measured once per question set (out/base-mmlu.json); from scratch
    the random model reads with the tokenizer the first seed's react variant trained."""
    path = out / "base-mmlu.json"
    if path.exists() and (stored := read_json(path)).get("n") == mmlu.questions:
        return stored
    result = mmlu_accuracy(mmlu, eval_config(cfg, out / "base-mmlu", tokenizer=scratch_tokenizer(cfg, out), base=base),
                           progress)
    with atomic_write(path) as f:
        f.write(json.dumps(result, indent=2) + "\n")
    return result


def run_experiment(name: str, cfg: QuickstartConfig, out: Path, progress: bool = True, seeds: int = 3,
                   mmlu: MMLUSettings = MMLUSettings()) -> list[dict]:
    """Run (or reuse) each variant of experiment `name` ("all": every experiment) at `seeds` seeds from cfg.seed;
    writes out/<name>/results.json and results.png; returns one aggregated row per variant."""
    base = None if cfg.from_scratch else import_base(cfg, out)
    world = build_world(cfg.world)
    chosen = list(EXPERIMENTS.values()) if name == "all" else [EXPERIMENTS[name]]
    names = sorted({v for e in chosen for v in e.variants}, key=list(VARIANTS).index)
    measures = {v: tuple(m for e in chosen if v in e.variants for m in e.measures) for v in names}
    rows = []
    for variant in names:
        runs = [run_variant(variant, dataclasses.replace(cfg, seed=cfg.seed + s), world, out, progress, base,
                            measures[variant], mmlu)
                for s in (range(seeds) if VARIANTS[variant].methods else range(1))]
        rows.append(aggregate(runs))
    reference = {"base_mmlu": base_mmlu(mmlu, cfg, out, base, progress)["accuracy"]} \
        if any("mmlu" in m for m in measures.values()) else {}
    target = out / name
    target.mkdir(parents=True, exist_ok=True)
    with atomic_write(target / "results.json") as f:
        f.write(json.dumps({"experiment": name, "seeds": seeds, "results": rows, **reference, "config": to_dict(cfg)},
                           indent=2) + "\n")
    plot(rows, reference, target / "results.png", name)
    return rows


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def aggregate(runs: list[dict]) -> dict:
    """One row for a variant's runs: each number as its mean with `<name>_std`, per-kind EM means, summed minutes."""
    row = {"variant": runs[0]["variant"], "label": runs[0]["label"], "seeds": [r.get("seed") for r in runs]}
    numbers = {"em": [r["em"] for r in runs], "f1": [r["f1"] for r in runs],
               "valid_tool_calls": [r["valid_tool_calls"] for r in runs],
               "steps_per_episode": [r["steps_per_episode"] for r in runs]}
    if runs[0]["held_out_chat_loss"] is not None:
        numbers["held_out_chat_loss"] = [r["held_out_chat_loss"] for r in runs]
    if "mmlu" in runs[0]:
        numbers["mmlu"] = [r["mmlu"]["accuracy"] for r in runs]
    if "hallucination" in runs[0]:
        numbers.update({f"hallucination_{k}": [r["hallucination"][k] for r in runs] for k in runs[0]["hallucination"]})
    for key, values in numbers.items():
        row[key], row[f"{key}_std"] = mean_std(values)
    row["per_kind"] = {k: statistics.fmean(r["per_kind"][k] for r in runs) for k in runs[0]["per_kind"]}
    row["minutes"] = sum(r["minutes"] for r in runs)
    return row


def _pm(row: dict, key: str, digits: int = 1) -> str:
    return f"{row[key]:.{digits}f} ± {row[f'{key}_std']:.{digits}f}" if key in row else "-"


def format_table(rows: list[dict], reference: dict | None = None) -> str:
    """Mean ± std over seeds of each variant's numbers; the columns present depend on what was measured."""
    extra = [k for k in ("held_out_chat_loss", "mmlu", "hallucination_all") if any(k in r for r in rows)]
    titles = {"held_out_chat_loss": "chat loss", "mmlu": "MMLU", "hallucination_all": "hallucination"}
    head = f"{'variant':<46}{'seeds':>6}{'EM':>14}{'valid calls':>13}" + "".join(f"{titles[k]:>16}" for k in extra) \
        + f"{'min':>7}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['label']:<46}{len(r['seeds']):>6}{_pm(r, 'em'):>14}{r['valid_tool_calls']:>12.0f}%"
                     + "".join(f"{_pm(r, k, 3 if k == 'held_out_chat_loss' else 1):>16}" for k in extra)
                     + f"{r['minutes']:>7.1f}")
    if reference:
        lines.append(f"untouched base: MMLU {reference['base_mmlu']:.1f}")
    return "\n".join(lines)


def plot(rows: list[dict], reference: dict, path: Path, name: str) -> None:
    """EM per question kind (and overall) of each variant as grouped bars, the seeds' std as error bars on the
    overall EM; a second panel for MMLU or hallucination rates when the experiment measures them."""
    kinds = sorted({k for r in rows for k in r["per_kind"]})
    side = [k for k in ("mmlu", "hallucination_all", "hallucination_direct", "hallucination_request",
                        "hallucination_missing_tool") if any(k in r for r in rows)]
    fig = Figure(figsize=(max(6, 1.6 * len(kinds) + 2) + (4 if side else 0), 4))
    axes = fig.subplots(1, 2 if side else 1, gridspec_kw={"width_ratios": [3, 1.3]} if side else None)
    ax = axes[0] if side else axes
    width = 0.8 / len(rows)
    for i, r in enumerate(rows):
        xs = [j + i * width for j in range(len(kinds) + 1)]
        ax.bar(xs, [r["per_kind"].get(k, 0.0) for k in kinds] + [r["em"]], width, label=r["label"])
        ax.errorbar(xs[-1], r["em"], yerr=r["em_std"], color="black", capsize=3)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(kinds) + 1)], kinds + ["all"])
    seeds = max(len(r["seeds"]) for r in rows)
    ax.set(ylabel="exact match (%)", title=f"experiment '{name}': held-out world questions "
           + (f"(mean of {seeds} seeds)" if seeds > 1 else "(one seed)"))
    ax.legend(fontsize=8)
    if side:
        bx = axes[1]
        for i, r in enumerate(rows):
            xs = [j + i * width for j in range(len(side))]
            bx.bar(xs, [r.get(k, 0.0) for k in side], width, yerr=[r.get(f"{k}_std", 0.0) for k in side], capsize=3)
        if "base_mmlu" in reference:
            bx.axhline(reference["base_mmlu"], color="gray", linestyle="--", label="untouched base")
            bx.legend(fontsize=8)
        bx.set_xticks([j + 0.4 - width / 2 for j in range(len(side))],
                      [k.replace("hallucination_", "halluc.\n") for k in side], fontsize=8)
        bx.set(ylabel="%", title="MMLU accuracy" if side == ["mmlu"] else "tool hallucination (% of episodes)")
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", choices=[*EXPERIMENTS, "all"])
    parser.add_argument("--out", default="runs/experiments", help="output directory (variants are reused)")
    parser.add_argument("--config", default=None, help="YAML QuickstartConfig (model, steps, questions)")
    parser.add_argument("--from-scratch", action="store_true", help="the quickstart's random small model as the base")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per fine-tuned variant (from the config's seed)")
    parser.add_argument("--mmlu", default=MMLUSettings.path, help="FireAct's MMLU folder (mixing: test/*.csv)")
    parser.add_argument("--mmlu-questions", type=int, default=MMLUSettings.questions,
                        help="MMLU test questions asked, spread evenly over the subjects")
    parser.add_argument("overrides", nargs="*", help="key=value changes to the quickstart config")


def run(args) -> int:
    cfg = load(QuickstartConfig, args.config, preset_overrides(args.from_scratch, False) + list(args.overrides))
    rows = run_experiment(args.name, cfg, Path(args.out), seeds=args.seeds,
                          mmlu=MMLUSettings(args.mmlu, args.mmlu_questions))
    reference = read_json(Path(args.out) / args.name / "results.json")
    print(format_table(rows, {"base_mmlu": reference["base_mmlu"]} if "base_mmlu" in reference else None))
    print(f"wrote {args.out}/{args.name}/results.json and results.png")
    return 0
