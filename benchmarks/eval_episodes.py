"""Episodes/s of a 50-episode agent evaluation on the generated world (local search/lookup/calculate tools),
through the real harness (`agentjax.agent.evaluate.evaluate`), with compile counts and where the time goes.

    python benchmarks/eval_episodes.py [--run RUN_DIR] [--episodes 50] [--batch 16] [--repeats 3]
        [--compare-waiting] [--out runs/bench/eval_episodes.json]

The model is a small Llama fine-tuned briefly on the world teacher's ReAct trajectories (the quickstart's
recipe, `--train-steps` steps, trained once into runs/bench/eval-agent-* and reused), or any training run
given with `--run` (e.g. runs/quickstart/train). Each repeat evaluates the same held-out questions into a
fresh output directory. Reported per repeat: the harness's episodes/s (its clock includes the warm-up that
compiles every program), episodes/s after warm-up, compiles (harness total and after warm-up), and the wall
time split into: warm-up, extend (device, rendered turns onto the cache), decode (device), render (host:
templating each conversation, cache bookkeeping), reply handling (host: bytes to text), tools (the
act phase: parsing actions, tool calls in the thread pool, transcripts). The split comes from timing the
loop's phases (the loop and decoder are subclassed, nothing else changes); tool seconds are also summed from
the transcripts. "rows busy" is the share of the decode loop's row-steps that made a token of a live reply.
`--compare-waiting` plays each repeat a second time, interleaved, with every decode waiting for the batch's
longest reply (the loop before continuous batching), and reports the ratio.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import hashlib
import json
import statistics
import tempfile
import time
from pathlib import Path
from unittest import mock

import jax
import numpy as np

from common import BENCH_DIR, print_table, write_json
from agentjax import perf
from agentjax.agent import evaluate as harness
from agentjax.agent.decode import Decoder
from agentjax.agent.loop import AgentLoop

PHASES = ("warm_up", "extend", "decode", "render", "reply", "tools")


class Phases:
    """Exclusive wall seconds per phase: time inside a nested phase counts only there."""

    def __init__(self):
        self.seconds: collections.Counter = collections.Counter()
        self._stack: list[list] = []
        self.decode_steps = 0  # while-loop iterations of every decode, each one token for every row

    @contextlib.contextmanager
    def __call__(self, name: str):
        now = time.perf_counter()
        if self._stack:
            self.seconds[self._stack[-1][0]] += now - self._stack[-1][1]
        self._stack.append([name, now])
        try:
            yield
        finally:
            now = time.perf_counter()
            name, since = self._stack.pop()
            self.seconds[name] += now - since
            if self._stack:
                self._stack[-1][1] = now


def timed_classes(phases: Phases, after_warm_up: perf.CompileCounter, stack: contextlib.ExitStack,
                  waiting: bool = False):
    """The harness's Decoder and AgentLoop with each phase timed (device work waited for inside its phase);
    `after_warm_up` counts compiles from the end of warm-up until `stack` closes. `waiting`: every decode
    waits for all its rows to end."""

    class TimedDecoder(Decoder):
        def warm_up(self, cache, logits):
            with phases("warm_up"):
                out = jax.block_until_ready(super().warm_up(cache, logits))
            stack.enter_context(after_warm_up)
            return out

        def extend(self, cache, logits, new_tokens, starts):
            if not phases._stack or phases._stack[-1][0] == "warm_up":
                return super().extend(cache, logits, new_tokens, starts)
            with phases("extend"):
                return jax.block_until_ready(super().extend(cache, logits, new_tokens, starts))

        def decode(self, *args, **kwargs):
            if not phases._stack or phases._stack[-1][0] == "warm_up":
                return super().decode(*args, **kwargs)
            with phases("decode"):
                out = jax.block_until_ready(super().decode(*args, **kwargs))
            phases.decode_steps += int(np.asarray(out.count).max())  # the loop runs until its longest reply ends
            return out

    class TimedLoop(AgentLoop):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.refill_rows = self.decoder.batch if waiting else None

        def _sync_caches(self, *args):
            with phases("render"):
                return super()._sync_caches(*args)

        def _generate(self, *args):
            with phases("reply"):
                return super()._generate(*args)

        def _act(self, *args):
            with phases("tools"):
                return super()._act(*args)

    return TimedDecoder, TimedLoop


def trained_run(steps: int, root: Path) -> Path:
    """A small Llama fine-tuned for `steps` steps on the world's ReAct trajectories (quickstart recipe), trained
    once per model shape and step count and then reused."""
    from agentjax.model import preset
    from agentjax.quickstart import QuickstartConfig, run_config, write_trajectories
    from agentjax.world.build import build_world
    from agentjax.train.checkpoint import Checkpoints
    from agentjax.train.run_dir import is_run_dir
    from agentjax.train.trainer import train

    cfg = QuickstartConfig(steps=steps)
    shape = hashlib.sha1(repr(preset(cfg.model_preset)).encode()).hexdigest()[:8]  # a changed preset retrains
    out = root / f"eval-agent-{cfg.model_preset}-{shape}-{steps}steps"
    run_dir = out / "train"
    if is_run_dir(run_dir) and (Checkpoints(run_dir, read_only=True).latest_step() or 0) >= steps:
        return run_dir
    source = {"path": str(write_trajectories(build_world(cfg.world), "react", "train", out)), "format": "agentjax"}
    train(run_config(cfg, [source], run_dir))
    return run_dir


def eval_config(run: Path, out_dir: Path, args):
    """The quickstart's held-out evaluation of `run`, with this benchmark's size."""
    from agentjax.quickstart import QuickstartConfig, eval_config as quickstart_eval

    cfg = QuickstartConfig(eval_questions=args.episodes, eval_batch=args.batch, max_len=args.max_len,
                           max_new_tokens=args.max_new_tokens)
    return quickstart_eval(cfg, out_dir, run=run)


def one_evaluation(run: Path, args, waiting: bool = False) -> dict:
    """Evaluate once into a fresh directory; the harness's summary plus the phase split and transcript totals."""
    phases, after_warm_up = Phases(), perf.CompileCounter()
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        decoder_cls, loop_cls = timed_classes(phases, after_warm_up, stack, waiting)
        with mock.patch.object(harness, "Decoder", decoder_cls), mock.patch.object(harness, "AgentLoop", loop_cls):
            summary = harness.evaluate(eval_config(run, Path(tmp), args), progress=False)
        stack.close()
        records = [json.loads(line) for line in (Path(tmp) / harness.TRANSCRIPTS).read_text().splitlines()]
    seconds, episodes = summary["seconds"], summary["episodes_this_run"]
    generated = sum(r["generated_tokens"] for r in records)
    return dict(
        loop="waiting for the batch" if waiting else "continuous", episodes=episodes, em=summary["em"], statuses=summary["statuses"], tool_calls=summary["tool_calls"],
        mean_steps=summary["mean_steps"], seconds=seconds, episodes_per_s=summary["episodes_per_s"],
        episodes_per_s_after_warm_up=episodes / (seconds - phases.seconds["warm_up"]),
        compiles=summary["compiles"], compile_seconds=summary["compile_seconds"],
        compiles_after_warm_up=after_warm_up.count, phase_seconds={p: phases.seconds[p] for p in PHASES},
        unaccounted_seconds=seconds - sum(phases.seconds.values()),
        transcript_tool_seconds=sum(c["seconds"] for r in records for c in r["tool_calls"]),
        generated_tokens=generated, decode_tok_s=generated / phases.seconds["decode"],
        decode_steps=phases.decode_steps, row_utilisation=generated / (phases.decode_steps * args.batch),
        mean_context_tokens=statistics.mean(r["context_tokens"] for r in records),
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default=None, help="a training run directory to evaluate (default: train one)")
    p.add_argument("--train-steps", type=int, default=150, help="steps of the benchmark's own model when no --run")
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--batch", type=int, default=16, help="episodes played at once (quickstart: 16)")
    p.add_argument("--max-len", type=int, default=1024, help="KV cache per episode (quickstart: 1024)")
    p.add_argument("--max-new-tokens", type=int, default=96, help="per reply (quickstart: 96)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--compare-waiting", action="store_true",
                   help="also play each repeat with decodes that wait for the whole batch, interleaved")
    p.add_argument("--out", default=str(BENCH_DIR / "eval_episodes.json"))
    args = p.parse_args()
    run = Path(args.run) if args.run else trained_run(args.train_steps, BENCH_DIR)
    reps, waited = [], []
    for i in range(args.repeats):
        reps.append(one_evaluation(run, args))
        print(f"repeat {i + 1}: {reps[-1]['episodes_per_s']:.2f} episodes/s, {reps[-1]['compiles']} compiles",
              flush=True)
        if args.compare_waiting:
            waited.append(one_evaluation(run, args, waiting=True))
            print(f"  waiting for the batch: {waited[-1]['episodes_per_s']:.2f} episodes/s", flush=True)
    median = sorted(reps, key=lambda r: r["episodes_per_s"])[len(reps) // 2]
    title = f"{args.episodes}-episode world evaluation, batch {args.batch}, cache {args.max_len}, run {run}"
    print_table(title, reps + waited, [("loop", "loop", ""),
        ("episodes", "episodes", "d"), ("em", "EM", ".1f"), ("mean_steps", "steps/ep", ".2f"),
        ("seconds", "seconds", ".1f"), ("episodes_per_s", "episodes/s", ".2f"),
        ("episodes_per_s_after_warm_up", "after warm-up", ".2f"), ("compiles", "compiles", "d"),
        ("compiles_after_warm_up", "after warm-up", "d"), ("decode_tok_s", "decode tok/s", ",.0f"),
        ("row_utilisation", "rows busy", ".0%")])
    total = median["seconds"]
    split = [dict(phase=p, seconds=median["phase_seconds"][p], share=median["phase_seconds"][p] / total) for p in PHASES]
    split.append(dict(phase="other", seconds=median["unaccounted_seconds"], share=median["unaccounted_seconds"] / total))
    print_table("Where the median repeat's time went", split,
                [("phase", "phase", ""), ("seconds", "seconds", ".2f"), ("share", "share", ".1%")])
    print(f"tool calls from the transcripts: {sum(median['tool_calls'].values())} calls, "
          f"{median['transcript_tool_seconds']:.3f} s summed; statuses {median['statuses']}")
    ratio = None
    if waited:
        ratio = statistics.median(c["episodes_per_s_after_warm_up"] / w["episodes_per_s_after_warm_up"]
                                  for c, w in zip(reps, waited))
        print(f"continuous / waiting for the batch, episodes/s after warm-up (median of {len(reps)}): {ratio:.2f}x")
    write_json(args.out, dict(benchmark="eval_episodes", run=str(run), median_repeat=median, repeats=reps,
                              waiting_repeats=waited, continuous_over_waiting=ratio, args=vars(args)))


if __name__ == "__main__":
    main()
