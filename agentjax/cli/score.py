"""`agentjax score TRAJ_FILE [--task T] [--json OUT]`: re-score a FireAct-style results file."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from agentjax.util.atomic import atomic_write
from agentjax.tasks.fireact_results import Rescored, rescore
from agentjax.agent.registry import TASKS, get_task

_SHOWN_DISAGREEMENTS = 5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The score command's arguments."""
    parser.add_argument("traj_file", type=Path, help="FireAct results JSON: question id -> {pred, gt, em, f1, ...}")
    parser.add_argument("--task", default="hotpotqa", choices=sorted(TASKS), help="whose scorer to use")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write the scores as JSON here")


def run(args: argparse.Namespace) -> int:
    """Print n and each metric (in percent), report stored-vs-recomputed disagreements, optionally write JSON."""
    result = rescore(args.traj_file, get_task(args.task))  # bad input: a DataError, reported by agentjax.cli
    print(format_report(args.traj_file, result))
    if args.json is not None:
        with atomic_write(args.json) as f:
            json.dump({"file": str(args.traj_file), "task": args.task, "n": result.n, **result.metrics,
                       "stored": result.stored, "disagreements": result.disagreements}, f, indent=2, ensure_ascii=False)
    return 0


def format_report(path: Path, result: Rescored) -> str:
    """Human-readable summary: n, metrics in percent, and the first few disagreements with the stored scores."""
    metrics = "  ".join(f"{name.upper()} {100 * value:.1f}" for name, value in result.metrics.items())
    lines = [f"{path.name}", f"n {result.n}  {metrics}"]
    if not result.disagreements:
        lines.append(f"stored scores agree with the recomputed ones on all {result.n} questions")
    else:
        lines.append(f"{len(result.disagreements)} questions disagree with the stored scores; first ones:")
        lines += [f"  {json.dumps(d, ensure_ascii=False)}" for d in result.disagreements[:_SHOWN_DISAGREEMENTS]]
    return "\n".join(lines)
