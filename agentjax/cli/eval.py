"""`agentjax eval --config configs/X.yaml [key=value ...]`: run (or resume) an agent evaluation."""

from __future__ import annotations

import argparse

from agentjax.agent.config import EvalConfig
from agentjax.agent.evaluate import evaluate, format_summary, task_metrics
from agentjax.configlib import load


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML eval config (see configs/)")
    parser.add_argument("overrides", nargs="*", help="key=value changes, e.g. limit=50 output_dir=runs/eval-x")


def run(args) -> int:
    cfg = load(EvalConfig, args.config, args.overrides)
    summary = evaluate(cfg)
    print(format_summary(summary, task_metrics(cfg)))
    print(f"wrote {cfg.output_dir}/transcripts.jsonl and summary.json")
    return 0
