"""`agentjax train --config configs/X.yaml [key=value ...]`: train, or resume the run in its output_dir."""

from __future__ import annotations

import argparse
import logging
import sys

from agentjax.configlib import load
from agentjax.train.config import RunConfig
from agentjax.train.trainer import TrainingDiverged, train


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML recipe (see configs/)")
    parser.add_argument("overrides", nargs="*", help="key=value changes, e.g. train.steps=200 output_dir=runs/x")


def run(args) -> int:
    # force: importing TensorFlow/orbax may already have configured the root logger
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    logging.getLogger("agentjax").setLevel(logging.INFO)
    cfg = load(RunConfig, args.config, args.overrides)
    try:
        result = train(cfg)
    except TrainingDiverged as e:
        print(f"agentjax train: {e}", file=sys.stderr)
        return 3
    state = "preempted (rerun to resume)" if result.preempted else "done"
    print(f"{state}: step {result.final_step}, last loss {result.last_loss}, run in {result.run_dir}")
    return 0
