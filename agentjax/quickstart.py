"""`agentjax quickstart`: the whole method on a laptop CPU, on a generated tool-use world.

1. Build the world (entities, documents, questions; test entities never seen in training).
2. The scripted teacher solves the training questions with the world's tools and writes trajectories.
3. Evaluate a freshly initialised small Llama as an agent on held-out questions (the "before").
4. Fine-tune it on the trajectories (tokenizer trained on the training text).
5. Evaluate the fine-tuned agent on the same held-out questions with the same tool loop (the "after").
Writes data/, train/ (checkpoints, metrics), eval-before/ and eval-after/ (transcripts, summaries),
summary.json and quickstart.png into the output directory, and prints a table.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.figure import Figure

from agentjax.agent.config import EvalConfig
from agentjax.agent.evaluate import evaluate
from agentjax.configlib import ConfigSection, from_dict, load, to_dict
from agentjax.data.native import write_conversations
from agentjax.train.config import RunConfig
from agentjax.train.metrics import read_metrics
from agentjax.train.trainer import train
from agentjax.util.atomic import atomic_write
from agentjax.world.build import WorldConfig, build_world
from agentjax.world.teacher import generate_trajectories

@dataclass(frozen=True)
class QuickstartConfig(ConfigSection):
    """What the quickstart trains and evaluates; configs/quickstart.yaml spells out the same defaults."""

    # Ten times the default world's entities: each training name is seen a few times at most, so the model must
    # read names from its context (held-out loss tracks training loss) instead of memorising a small cast.
    world: WorldConfig = field(default_factory=lambda: WorldConfig(
        countries=100, cities=1000, organisations=600, people=4000, train_questions_per_kind=800))
    methods: tuple[str, ...] = ("react",)  # teacher trajectories to train on (see agentjax/world/teacher.py)
    model_preset: str = "small"
    model_overrides: dict = field(default_factory=dict)
    tokenizer_vocab: int = 1024
    seq_len: int = 384
    steps: int = 300
    global_batch: int = 8
    learning_rate: float = 3e-3
    warmup_steps: int = 30
    eval_split: str = "test"
    eval_questions: int = 100
    max_steps: int = 7  # replies per episode (the teacher needs at most 6)
    eval_batch: int = 16
    max_len: int = 768
    max_new_tokens: int = 80
    seed: int = 0


# The reduced run CI does: fewer steps and fewer held-out questions.
FAST = dict(steps=120, eval_questions=40, world={"eval_questions_per_kind": 8})


def run_config(cfg: QuickstartConfig, sources: list[dict], out_dir: Path, conditioning: dict | None = None,
               held_out: list[dict] | None = None):
    """The training run on world trajectories `sources` (agentjax format), written to `out_dir`; optionally
    NAT `conditioning` and a held-out loss on `held_out` sources at the end."""
    data = {"template": "react", "seq_len": cfg.seq_len, "seed": cfg.seed,
            **({"conditioning": conditioning} if conditioning else {})}
    return from_dict(RunConfig, dict(
        model={"preset": cfg.model_preset, "overrides": dict(cfg.model_overrides)},
        tokenizer={"train_vocab_size": cfg.tokenizer_vocab},
        data={"sources": sources, **data},
        eval_data={"sources": held_out, **data, "shuffle": False} if held_out else None,
        mesh={"num_devices": 1},
        train={"steps": cfg.steps, "global_batch": cfg.global_batch, "log_every": 10,
               "checkpoint_every": cfg.steps, "keep_checkpoints": 1, "eval_every": cfg.steps if held_out else 0,
               "optimizer": {"learning_rate": cfg.learning_rate, "warmup_steps": cfg.warmup_steps,
                             "weight_decay": 0.01}},
        output_dir=str(out_dir), seed=cfg.seed,
    ))


def eval_config(cfg: QuickstartConfig, out_dir: Path, *, run: Path | None = None, tokenizer: Path | None = None,
                **changes):
    """The held-out evaluation of a trained `run`, or of the untrained model (with the run's `tokenizer`)."""
    model = {} if run else {"model": {"preset": cfg.model_preset, "overrides": dict(cfg.model_overrides)},
                             "tokenizer": str(tokenizer)}
    return from_dict(EvalConfig, dict(
        task="world", task_options=to_dict(cfg.world), split=cfg.eval_split, limit=cfg.eval_questions,
        max_steps=cfg.max_steps, mesh={"num_devices": 1}, seed=cfg.seed, output_dir=str(out_dir),
        generation={"batch_size": cfg.eval_batch, "max_len": cfg.max_len, "max_new_tokens": cfg.max_new_tokens},
        **({"run": str(run)} if run else model), **changes,
    ))


def write_trajectories(world, method: str, split: str, out: Path) -> Path:
    """The teacher's `method` trajectories for `split`, written once as agentjax JSONL (reused when present)."""
    path = out / "data" / f"{split}-{method}.jsonl"
    if not path.exists():
        write_conversations(path, generate_trajectories(world, split, [method]))
    return path


def run_quickstart(cfg: QuickstartConfig, out: Path, progress: bool = True) -> dict:
    """Do the five steps; returns (and writes) the summary with em_before, em_after and per-kind scores."""
    out.mkdir(parents=True, exist_ok=True)
    timings = {}
    t0 = time.perf_counter()
    world = build_world(cfg.world)
    sources = [{"path": str(write_trajectories(world, m, "train", out)), "format": "agentjax"} for m in cfg.methods]
    timings["data_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    result = train(run_config(cfg, sources, out / "train"))  # trains the tokenizer first; resumes if interrupted
    timings["train_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    before = evaluate(eval_config(cfg, out / "eval-before", tokenizer=out / "train"), progress)
    timings["eval_before_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    after = evaluate(eval_config(cfg, out / "eval-after", run=out / "train"), progress)
    timings["eval_after_s"] = time.perf_counter() - t0

    summary = dict(
        em_before=before["em"], em_after=after["em"], f1_before=before["f1"], f1_after=after["f1"],
        per_kind={k: {"n": v["n"], "em_before": before["per_kind"].get(k, {}).get("em", 0.0), "em_after": v["em"]}
                  for k, v in after["per_kind"].items()},
        steps_per_episode={"before": before["mean_steps"], "after": after["mean_steps"]},
        valid_tool_calls={"before": valid_share(before), "after": valid_share(after)},
        statuses={"before": before["statuses"], "after": after["statuses"]},
        final_train_loss=result.last_loss, train_steps=result.final_step,
        train_examples=sum(1 for s in sources for _ in open(s["path"])),
        eval_questions=after["n"], timings=timings, config=to_dict(cfg),
    )
    with atomic_write(out / "summary.json") as f:
        f.write(json.dumps(summary, indent=2) + "\n")
    plot(out, summary)
    return summary


def valid_share(summary: dict) -> float:
    """Share of tool calls that named a real tool with a well-formed argument."""
    calls = summary["tool_calls"]
    total = sum(calls.values())
    return 100 * (total - calls.get("invalid_action", 0)) / total if total else 0.0


def format_table(summary: dict) -> str:
    rows = [f"{'question kind':<16}{'n':>5}{'EM before':>11}{'EM after':>10}", "-" * 42]
    for kind, s in summary["per_kind"].items():
        rows.append(f"{kind:<16}{s['n']:>5}{s['em_before']:>11.1f}{s['em_after']:>10.1f}")
    rows.append(f"{'all':<16}{summary['eval_questions']:>5}{summary['em_before']:>11.1f}{summary['em_after']:>10.1f}")
    steps, valid = summary["steps_per_episode"], summary["valid_tool_calls"]
    rows.append(f"steps per episode {steps['before']:.2f} -> {steps['after']:.2f}; "
                f"valid tool calls {valid['before']:.0f}% -> {valid['after']:.0f}%")
    return "\n".join(rows)


def plot(out: Path, summary: dict) -> None:
    """quickstart.png: the training loss curve, and EM before/after per question kind."""
    metrics = read_metrics(out / "train")
    fig = Figure(figsize=(11, 4))
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot([m["step"] for m in metrics], [m["loss"] for m in metrics])
    ax1.set(xlabel="step", ylabel="train loss (per supervised token)", title="fine-tuning on teacher trajectories")
    kinds = list(summary["per_kind"]) + ["all"]
    before = [summary["per_kind"][k]["em_before"] for k in kinds[:-1]] + [summary["em_before"]]
    after = [summary["per_kind"][k]["em_after"] for k in kinds[:-1]] + [summary["em_after"]]
    xs = range(len(kinds))
    ax2.bar([x - 0.2 for x in xs], before, 0.4, label="before fine-tuning")
    ax2.bar([x + 0.2 for x in xs], after, 0.4, label="after fine-tuning")
    ax2.set_xticks(list(xs), kinds, rotation=20)
    ax2.set(ylabel="exact match (%)", title=f"held-out {summary['config']['eval_split']} questions, real tool loop")
    ax2.legend()
    fig.tight_layout()
    with atomic_write(out / "quickstart.png", "wb") as f:
        fig.savefig(f, format="png", dpi=110)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/quickstart", help="output directory (rerun to resume)")
    parser.add_argument("--config", default=None, help="YAML QuickstartConfig (default: the values of configs/quickstart.yaml)")
    parser.add_argument("--fast", action="store_true", help="a reduced run (fewer steps and questions), as CI does")
    parser.add_argument("overrides", nargs="*", help="key=value changes, e.g. steps=300")


def run(args) -> int:
    logging.basicConfig(level=logging.WARNING)
    overrides = [f"{k}={json.dumps(v)}" for k, v in _flatten(FAST).items()] if args.fast else []
    cfg = load(QuickstartConfig, args.config, overrides + list(args.overrides))
    summary = run_quickstart(cfg, Path(args.out))
    print(format_table(summary))
    print(f"wrote {args.out}/summary.json and {args.out}/quickstart.png")
    return 0


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out
