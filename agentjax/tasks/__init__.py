"""Evaluation tasks (questions + scoring): HotpotQA, StrategyQA, Bamboogle, MMLU, GSM8K, and FireAct results files.

The registry of tasks by name, which also holds the generated world (`agentjax.world`), is `agentjax.agent.registry`.
"""

from agentjax.tasks.base import Question, Task

__all__ = ["Question", "Task"]
