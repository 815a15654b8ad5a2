"""Evaluation tasks (questions + scoring): HotpotQA, StrategyQA, Bamboogle, MMLU, GSM8K."""

from agentjax.tasks.base import Question, Task
from agentjax.tasks.registry import TASKS, get_task

__all__ = ["Question", "Task", "TASKS", "get_task"]
