"""The `agentjax` command: one subcommand per job. The only layer that knows every subsystem.

Each command's module (`add_arguments(parser)`, `run(args) -> int`) is imported only when that command runs, so
`agentjax --help` starts in a blink and a command pays only for the subsystems it uses."""

from __future__ import annotations

import argparse
import importlib
import sys

from agentjax.configlib import ConfigError
from agentjax.util.errors import DataError

# subcommand -> (module with `add_arguments(parser)` and `run(args) -> int`, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "convert": ("agentjax.cli.convert", "convert checkpoints between Hugging Face and agentjax"),
    "data": ("agentjax.cli.data", "inspect rendered training examples (trained spans marked) and count a data config's epoch"),
    "train": ("agentjax.cli.train", "fine-tune a model on trajectories (resumes the run in its output_dir)"),
    "eval": ("agentjax.cli.eval", "evaluate an agent on a task with real tool calls (resumable)"),
    "quickstart": ("agentjax.quickstart", "train and evaluate a small agent on a generated tool-use world, on CPU"),
    "experiment": ("agentjax.experiment", "the papers' comparisons on the generated world (FireAct, NAT, AgentTuning, Agent-FLAN)"),
    "compile": ("agentjax.cli.compile", "compile a recipe's train step and eval decoder for a TPU slice (no TPU needed)"),
    "demo": ("agentjax.cli.demo", "build a small Llama and show it runs (forward, cache, sharding)"),
    "score": ("agentjax.cli.score", "re-score a FireAct-style results file (EM/F1 or accuracy) with agentjax's scorer"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Every subcommand's name and help; the full arguments of `command` only (all of them when None)."""
    parser = argparse.ArgumentParser(prog="agentjax", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        if command in (None, name):
            importlib.import_module(module).add_arguments(p)
    return parser


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line; key=value overrides may come before or after options (argparse alone drops the
    ones that follow an option once a positional has been read)."""
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(next((a for a in argv if a in COMMANDS), ""))
    args, extra = parser.parse_known_args(argv)
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*(args.overrides or []), *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    importlib.import_module("agentjax.perf").enable_compilation_cache()  # after parse: --help needs no jax
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except ConfigError as e:
        print(f"agentjax {args.command}: config error: {e}", file=sys.stderr)
        return 2
    except DataError as e:  # bad input names its file:line and field; a traceback would only bury that
        print(f"agentjax {args.command}: bad input: {e}", file=sys.stderr)
        return 2
    except (FileExistsError, FileNotFoundError) as e:  # a taken output or a missing input, named in the message
        print(f"agentjax {args.command}: {e}", file=sys.stderr)
        return 2
