"""Tasks by name, for eval configs and the command line: the file-based benchmarks and the generated world."""

from __future__ import annotations

import difflib
from typing import Any, Mapping

from agentjax.configlib import ConfigError, from_dict
from agentjax.tasks.bamboogle import Bamboogle
from agentjax.tasks.base import Task
from agentjax.tasks.gsm8k import GSM8K
from agentjax.tasks.hotpotqa import HotpotQA
from agentjax.tasks.mmlu import MMLU
from agentjax.tasks.strategyqa import StrategyQA
from agentjax.world.hallucination import WorldHallucinationTask
from agentjax.world.task import WorldTask

TASKS: dict[str, type[Task]] = {t.name: t for t in (HotpotQA, StrategyQA, Bamboogle, MMLU, GSM8K, WorldTask,
                                                  WorldHallucinationTask)}


def task_class(name: str) -> type[Task]:
    """The task class registered as `name`; a ConfigError listing the known names otherwise."""
    if name not in TASKS:
        close = difflib.get_close_matches(name, list(TASKS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"task {name!r} is unknown{hint} (known: {sorted(TASKS)})")
    return TASKS[name]


def task_options(name: str, options: Mapping[str, Any] | None = None):
    """The task's own settings (its `Options` section) read from a mapping; errors name `task_options.KEY`."""
    return from_dict(task_class(name).Options, dict(options or {}), "task_options")


def get_task(name: str, options: Mapping[str, Any] | None = None) -> Task:
    """A new task object for `name`, configured by `options` (see `task_options`)."""
    return task_class(name).from_options(task_options(name, options))
