"""`agentjax compile --config RECIPE --topology SLICE [--eval EVAL_CONFIG]`: compile for a TPU slice on any machine.

Shapes only (no weights, no data files, no TPU; libtpu must be installed): prints each program's per-device
peak memory against the slice's usable HBM, its compile time and the mesh; exits 1 when something does not fit.
Overrides `key=value` change the recipe; `eval.key=value` change the evaluation config.
"""

from __future__ import annotations

import argparse
import json

from agentjax.agent.config import EvalConfig
from agentjax.aot.compile import compile_for_slice
from agentjax.aot.topology import SLICES, get_slice, slice_devices
from agentjax.configlib import ConfigError, load
from agentjax.model.llama import PRESETS
from agentjax.train.config import RunConfig
from agentjax.util.atomic import atomic_write

EVAL_PREFIX = "eval."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="training recipe (see configs/): compiles its train step")
    parser.add_argument("--topology", required=True, choices=list(SLICES), help="the TPU slice to compile for")
    parser.add_argument("--eval", help="evaluation config: compiles its decoder (extend buckets, decode loop)")
    parser.add_argument("--no-train", action="store_true",
                        help="with --eval and --config: compile only the decoder (the recipe gives its model)")
    parser.add_argument("--preset", choices=sorted(PRESETS),
                        help="model shapes to assume instead of model.checkpoint/config.json")
    parser.add_argument("--num-slices", type=int, default=1, help="multi-slice: this many copies of the slice")
    parser.add_argument("--json", help="also write the report to this JSON file")
    parser.add_argument("overrides", nargs="*", help="key=value for the recipe, eval.key=value for the eval config")


def run(args) -> int:
    if not (args.config or args.eval):
        raise ConfigError("give --config (a training recipe), --eval (an evaluation config), or both")
    recipe_overrides = [o for o in args.overrides if not o.startswith(EVAL_PREFIX)]
    eval_overrides = [o[len(EVAL_PREFIX):] for o in args.overrides if o.startswith(EVAL_PREFIX)]
    if recipe_overrides and not args.config:
        raise ConfigError(f"overrides {recipe_overrides} change a recipe, but no --config was given")
    run_cfg = load(RunConfig, args.config, recipe_overrides) if args.config else None
    eval_cfg = load(EvalConfig, args.eval, eval_overrides) if args.eval else None
    tpu = get_slice(args.topology)
    report = compile_for_slice(tpu, slice_devices(tpu, args.num_slices), run_cfg, eval_cfg, args.preset,
                               train=not args.no_train)
    print(report.format())
    if args.json:
        with atomic_write(args.json) as f:
            f.write(json.dumps(report.to_dict(), indent=2) + "\n")
    print("fits" if report.fits else f"does NOT fit in {tpu.usable_hbm_gib:.2f} GiB a device")
    return 0 if report.fits else 1
