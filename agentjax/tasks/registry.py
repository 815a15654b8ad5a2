"""Tasks by name, for configs and the command line."""

from __future__ import annotations

import difflib

from agentjax.configlib import ConfigError
from agentjax.tasks.bamboogle import Bamboogle
from agentjax.tasks.base import Task
from agentjax.tasks.gsm8k import GSM8K
from agentjax.tasks.hotpotqa import HotpotQA
from agentjax.tasks.mmlu import MMLU
from agentjax.tasks.strategyqa import StrategyQA

TASKS: dict[str, type[Task]] = {t.name: t for t in (HotpotQA, StrategyQA, Bamboogle, MMLU, GSM8K)}


def get_task(name: str) -> Task:
    """A new task object for `name`; a ConfigError listing the known names otherwise."""
    if name not in TASKS:
        close = difflib.get_close_matches(name, list(TASKS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"task {name!r} is unknown{hint} (known: {sorted(TASKS)})")
    return TASKS[name]()
