"""The evaluation harness: episodes over a task's questions, scored, written as transcripts + summary.

`transcripts.jsonl` gets one line per finished episode, flushed as it ends (in a bucket, uploaded at most every
TRANSCRIPT_UPLOAD_S seconds); rerunning the same command skips the questions already there (an unreadable
line, e.g. torn by a kill, is reported and its episode redone), so an interrupted evaluation resumes without
redoing or duplicating episodes.
`summary.json` is written atomically at the end, from all the transcripts.
"""

from __future__ import annotations

import collections
import contextlib
import json
import math
import time
from pathlib import Path
from typing import Callable, Mapping

import jax
from tqdm import tqdm

from agentjax import sharding
from agentjax.agent.config import EvalConfig, GenerationConfig
from agentjax.agent.decode import Decoder, Sampling
from agentjax.agent.loop import AgentLoop, Episode, LoopSettings
from agentjax.agent.methods import EpisodeStart
from agentjax.agent.registry import get_task, task_class
from agentjax.configlib import ConfigError, to_dict
from agentjax.data.templates import get_template
from agentjax.data.tokenizer import load_tokenizer
from agentjax.model.llama import in_compute_dtype
from agentjax.perf import CompileCounter
from agentjax.tasks.base import Question, Task
from agentjax.tools.base import Tool
from agentjax.train.build import build_model, resolve_model_config
from agentjax.train.config import RunConfig
from agentjax.train.run_dir import load_trained_model
from agentjax.util.atomic import atomic_write
from agentjax.util.records import read_json, read_log
from agentjax.util.storage import AppendFile, as_path, make_dirs

TRANSCRIPTS, SUMMARY, CONFIG_RECORD = "transcripts.jsonl", "summary.json", "eval_config.json"
TRANSCRIPT_UPLOAD_S = 30.0  # a bucket's transcripts object is rewritten whole: at most this often (and at the end)


def load_model_and_tokenizer(cfg: EvalConfig, mesh):
    """The model to evaluate (LoRA merged for speed, weights in the compute dtype) and its tokenizer."""
    if cfg.run is not None:
        model, tokenizer = load_trained_model(cfg.run, mesh, cfg.run_step, base=cfg.run_base)
    else:
        tokenizer = load_tokenizer(cfg.tokenizer)
        run = RunConfig(model=cfg.model, seed=cfg.seed)
        model = build_model(run, mesh, resolve_model_config(run, tokenizer))
    return in_compute_dtype(model), tokenizer


def decoder_batch(g: GenerationConfig, questions: int) -> int:
    """Rows the decoder plays at once: batch_size, shrunk to the number of questions (no row that could never hold
    an episode) unless fixed_batch asks to keep the programs a full-batch evaluation compiles."""
    return g.batch_size if g.fixed_batch else min(g.batch_size, max(1, questions))


def task_and_tools(cfg: EvalConfig) -> tuple[Task, list[Question], Callable[[Question], Mapping[str, Tool]]]:
    """The task, its questions, and a maker of each episode's tools (Reflexion's finish checks the answer)."""
    checked = cfg.method == "reflexion"
    task = get_task(cfg.task, cfg.task_options)
    toolkit = task.toolkit(cfg.tools, cfg.split)  # a missing API key fails here, before episode 1
    primary = task.metrics[0]

    def tools_for(q: Question) -> Mapping[str, Tool]:
        return task.episode_tools(toolkit, q, (lambda answer: task.score(answer, q)[primary] == 1.0) if checked else None)

    return task, task.load(cfg.task_path, cfg.split, cfg.limit), tools_for


# Settings that may change between an interrupted evaluation and its resumption (they do not change answers).
RESUMABLE_CHANGES = ("limit", "output_dir", "mesh", "tool_timeout_s")


def check_same_evaluation(cfg: EvalConfig, out: Path) -> None:
    """Refuse to resume in a directory whose transcripts come from another model, task or setting."""
    path = out / CONFIG_RECORD
    current = {k: v for k, v in to_dict(cfg).items() if k not in RESUMABLE_CHANGES}
    current["generation"].pop("batch_size")
    if not path.exists():
        with atomic_write(path) as f:
            f.write(json.dumps(current, indent=2) + "\n")
        return
    stored = read_json(path)
    changed = sorted(k for k in current.keys() | stored.keys() if current.get(k) != stored.get(k))
    if changed:
        raise ConfigError(f"{out} holds an evaluation with other settings ({', '.join(changed)} differ); "
                          "its transcripts would be mixed with this one's: choose another output_dir")


def read_transcripts(path: Path) -> list[dict]:
    """Finished episodes already written: every valid line is kept; a line that cannot be read (the torn last line
    of a kill, a corrupted line anywhere) is reported and dropped, so only its episode is played again."""
    if not path.exists():
        return []
    records = read_log(path, "id", str)
    with atomic_write(path) as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    return records


def summarize(records: list[dict], task: Task, extra: dict) -> dict:
    """`n`, each metric (in %), per-kind metrics, statuses, tool-call statuses, steps, and what `extra` adds."""
    metrics = task.metrics
    by_kind = collections.defaultdict(list)
    for r in records:
        by_kind[str(r["meta"].get("type", r["kind"]))].append(r)
    mean = lambda rs, m: 100 * sum(r["scores"][m] for r in rs) / len(rs) if rs else 0.0  # noqa: E731
    return dict(
        n=len(records), **{m: mean(records, m) for m in metrics},
        per_kind={k: {"n": len(rs), **{m: mean(rs, m) for m in metrics}} for k, rs in sorted(by_kind.items())},
        statuses=dict(collections.Counter(r["status"] for r in records)),
        tool_calls=dict(collections.Counter(c["status"] for r in records for c in r["tool_calls"])),
        mean_steps=sum(r["steps"] for r in records) / len(records) if records else 0.0,
        **extra,
    )


def evaluate(cfg: EvalConfig, progress: bool = True) -> dict:
    """Run (or resume) the evaluation described by `cfg`; returns the summary, also written to summary.json.

    With several processes (a TPU pod's hosts) each plays its share of the questions on its own devices, and
    process 0 alone writes the output directory (see play_across_hosts).
    """
    sharding.initialize_distributed()
    cfg = cfg.with_run_defaults()
    system_prompt = cfg.system_prompt_text()
    out, writer = as_path(cfg.output_dir), jax.process_index() == 0
    mesh = sharding.make_mesh(cfg.mesh, jax.local_devices())
    task, questions, tools_for = task_and_tools(cfg)
    records = finished_records(cfg, out, {q.id for q in questions})
    done = {r["id"] for r in records}
    todo = [q for q in questions if q.id not in done]
    model, tokenizer = load_model_and_tokenizer(cfg, mesh)
    template = get_template(cfg.template, tokenizer, **cfg.template_options)
    g = cfg.generation
    loop = AgentLoop(
        Decoder(model, tokenizer, template.stop_strings, decoder_batch(g, len(questions)), g.max_len,
                g.max_new_tokens, g.buckets, mesh, end_ids=template.end_ids),
        template, EpisodeStart(system_prompt, cfg.conditioning), tools_for,
        LoopSettings(cfg.max_steps, Sampling(g.temperature, g.top_k, g.top_p), cfg.tool_timeout_s,
                     cfg.observation_max_chars, reply_without_action=cfg.reply_without_action, seed=cfg.seed),
    )
    primary = task.metrics[0]
    bar = tqdm(total=len(questions), initial=len(records), desc=f"eval {cfg.task}", unit="episode",
               disable=not (progress and writer), dynamic_ncols=True)
    t0 = time.perf_counter()
    transcripts = AppendFile(out / TRANSCRIPTS, TRANSCRIPT_UPLOAD_S) if writer else contextlib.nullcontext()
    with transcripts as f, CompileCounter() as compiles:
        def keep(record: dict) -> None:
            if f is not None:
                f.write(json.dumps(record) + "\n")
            records.append(record)
            bar.update()
            bar.set_postfix({primary: f"{100 * sum(r['scores'][primary] for r in records) / len(records):.1f}"},
                            refresh=False)

        def record_of(ep: Episode) -> dict:
            return {**ep.record(), "scores": task.score(ep.prediction, ep.question)}

        if jax.process_count() == 1:
            loop.run(todo, lambda ep: keep(record_of(ep)))
        else:
            play_across_hosts(loop, todo, record_of, keep, ROUND_BATCHES * g.batch_size)
    bar.close()
    seconds = time.perf_counter() - t0
    summary = summarize(records, task, dict(
        task=cfg.task, split=cfg.split, method=cfg.method, compiles=compiles.count,
        compile_seconds=compiles.seconds, seconds=seconds, episodes_this_run=len(todo),
        episodes_per_s=len(todo) / seconds if seconds else 0.0, devices=jax.device_count(),
        processes=jax.process_count(),
    ))
    if writer:
        with atomic_write(out / SUMMARY) as f:
            f.write(json.dumps(summary, indent=2) + "\n")
    return summary


def finished_records(cfg: EvalConfig, out: Path, wanted: set[str]) -> list[dict]:
    """The finished episodes of `wanted` questions already in `out`: process 0 checks the directory and reads
    them, every process gets the same list (so the output directory need not be shared between hosts)."""
    result = None
    if jax.process_index() == 0:
        try:
            make_dirs(out)
            check_same_evaluation(cfg, out)
            result = {"records": [r for r in read_transcripts(out / TRANSCRIPTS) if r["id"] in wanted]}
        except ConfigError as e:  # raised on every process, not only the one that found it
            result = {"error": str(e)}
    result = sharding.broadcast_json(result)
    if "error" in result:
        raise ConfigError(result["error"])
    return result["records"]


# Episodes each host plays between two exchanges of finished records, in decoder batches: a kill loses at most
# this many per host, and each exchange lets the batch drain (rows idle while the round's last episodes end).
ROUND_BATCHES = 4


def play_across_hosts(loop: AgentLoop, todo: list[Question], record_of: Callable[[Episode], dict],
                      keep: Callable[[dict], None], round_size: int) -> None:
    """Process i plays questions i, i+n, ... of `todo` on its own devices, in rounds of `round_size`; after each
    round every process receives every process's finished records and `keep`s them in process order.

    Every host holds the whole model: episodes are independent, so no per-token collective crosses hosts,
    and the output directory is written by process 0 alone (no shared storage needed)."""
    n, i = jax.process_count(), jax.process_index()
    mine = todo[i::n]
    rounds = math.ceil(math.ceil(len(todo) / n) / round_size)  # the same on every process: todo is
    for r in range(rounds):
        finished: list[dict] = []
        loop.run(mine[r * round_size:(r + 1) * round_size], lambda ep: finished.append(record_of(ep)))
        for part in sharding.gather_json(finished):
            for record in part:
                keep(record)


def task_metrics(cfg: EvalConfig) -> tuple[str, ...]:
    """The metric names of the configured task (headline first)."""
    return task_class(cfg.task).metrics


def format_summary(summary: dict, metrics: tuple[str, ...]) -> str:
    """A small table: overall and per question kind, then statuses and tool calls."""
    head = f"{'kind':<14}{'n':>6}" + "".join(f"{m:>10}" for m in metrics)
    rows = [head, "-" * len(head)]
    for kind, s in summary["per_kind"].items():
        rows.append(f"{kind:<14}{s['n']:>6}" + "".join(f"{s[m]:>10.1f}" for m in metrics))
    rows.append(f"{'all':<14}{summary['n']:>6}" + "".join(f"{summary[m]:>10.1f}" for m in metrics))
    rows.append(f"statuses {summary['statuses']}  tool calls {summary['tool_calls']}  "
                f"steps/episode {summary['mean_steps']:.2f}  compiles {summary['compiles']}")
    return "\n".join(rows)
