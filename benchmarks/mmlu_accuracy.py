"""MMLU accuracy (option-letter likelihood, agentjax.agent.choice) of a base model and fine-tuned runs, side by side.

The same questions for every model: `--questions` of FireAct's MMLU test split, spread evenly over the subjects.
  python benchmarks/mmlu_accuracy.py --base runs/exp-smollm2/base --run runs/exp-smollm2/variants/react/seed0/train
Writes runs/bench/mmlu_accuracy.json (accuracy, per subject, minutes, the share of each letter picked).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import BENCH_DIR, write_json

from agentjax.agent.config import EvalConfig
from agentjax.configlib import from_dict
from agentjax.experiment import MMLUSettings, mmlu_accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", help="an agentjax model directory (with its tokenizer), e.g. the quickstart's base/")
    parser.add_argument("--run", action="append", default=[], help="a training run directory (repeatable)")
    parser.add_argument("--mmlu", default=MMLUSettings.path)
    parser.add_argument("--questions", type=int, default=MMLUSettings.questions)
    parser.add_argument("--out", default=str(BENCH_DIR / "mmlu_accuracy.json"))
    args = parser.parse_args()
    mmlu = MMLUSettings(args.mmlu, args.questions)
    common = {"task": "mmlu", "mesh": {"num_devices": 1}}
    models = ([("base " + args.base, {"model": {"checkpoint": args.base}, "tokenizer": args.base, "template": "auto"})]
              if args.base else []) + [(run, {"run": run}) for run in args.run]
    results = {}
    for label, source in models:
        results[label] = mmlu_accuracy(mmlu, from_dict(EvalConfig, {**common, **source}), progress=True)
        print(f"{label}: {results[label]['accuracy']:.1f}% of {args.questions}, picked {results[label]['picked']}")
    write_json(Path(args.out), {"questions": args.questions, "mmlu": args.mmlu, "results": results})


if __name__ == "__main__":
    main()
