"""The `agentjax` command: one subcommand per job, each implemented in the module that owns it."""

from __future__ import annotations

import argparse
import importlib
import sys

from agentjax.configlib import ConfigError

# subcommand -> (module with `add_arguments(parser)` and `run(args) -> int`, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "convert": ("agentjax.model.convert_cli", "convert checkpoints between Hugging Face and agentjax"),
    "data": ("agentjax.data.cli", "inspect rendered training examples (trained spans marked) and count a data config's epoch"),
    "train": ("agentjax.train.cli", "fine-tune a model on trajectories (resumes the run in its output_dir)"),
    "eval": ("agentjax.agent.cli", "evaluate an agent on a task with real tool calls (resumable)"),
    "quickstart": ("agentjax.quickstart", "train and evaluate a small agent on a generated tool-use world, on CPU"),
    "experiment": ("agentjax.experiment", "the papers' comparisons on the generated world (FireAct, NAT, AgentTuning)"),
    "demo": ("agentjax.model.demo", "build a small Llama and show it runs (forward, cache, sharding)"),
    "score": ("agentjax.tasks.cli", "re-score a FireAct-style results file (EM/F1 or accuracy) with agentjax's scorer"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agentjax", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        importlib.import_module(module).add_arguments(p)
    return parser


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line; key=value overrides may come before or after options (argparse alone drops the
    ones that follow an option once a positional has been read)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*(args.overrides or []), *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except ConfigError as e:
        print(f"agentjax {args.command}: config error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
