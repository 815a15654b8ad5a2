"""Tool hallucination on the world (Agent-FLAN's Agent-H, at toy scale): episodes in which calling a tool is wrong.

Three kinds of episode, interleaved so that the first N cover each evenly:
  direct        the split's direct questions: the text itself answers, so search, lookup or calculate is a mistake
  request       general requests (count, sort, spell, ...) with every tool offered and none of use
  missing_tool  the split's arithmetic questions with `calculate` withheld: the tool the question needs is not
                offered (nor listed where a system prompt lists the episode's tools); calling it is a hallucination
A hallucinated call names an offered tool other than finish in a direct or request episode, or any tool that
was not offered. `hallucination_rates` gives the share of episodes with at least one, per kind and overall.
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path
from typing import Callable, Iterable, Mapping

from agentjax.tasks.base import Question, take
from agentjax.tools.base import Tool, parse_action
from agentjax.world.general_chat import general_exchange
from agentjax.world.task import WorldTask
from agentjax.world.tools import WorldToolkit

NO_TOOL_KINDS = ("direct", "request")
WITHHELD = "calculate"  # the tool arithmetic questions need, withheld in missing_tool episodes


class WorldHallucinationTask(WorldTask):
    """Direct questions, general requests and arithmetic questions without the calculator; EM/F1 as the world's.

    Each question's `meta["offered"]` names the tools its episode gets, so a transcript alone tells which calls
    were hallucinated."""

    name = "world-hallucination"

    def load(self, path: str | Path = "", split: str = "test", limit: int | None = None) -> list[Question]:
        questions = super().load(path, split)
        every_tool = tuple(WorldToolkit(self.world, split).new_episode())
        fewer = tuple(t for t in every_tool if t != WITHHELD)
        direct = [_with(q, "direct", every_tool) for q in questions if q.meta["type"] == "direct"]
        missing = [_with(q, "missing_tool", fewer) for q in questions if q.meta["type"] == "arithmetic"]
        requests = [_request(self.world.config.seed, split, i, every_tool)
                    for i in range(self.world.config.questions_per_kind(split))]
        mixed = [q for group in itertools.zip_longest(direct, requests, missing) for q in group if q is not None]
        return take(mixed, limit)

    def episode_tools(self, toolkit: WorldToolkit, question: Question,
                      is_correct: Callable[[str], bool] | None) -> Mapping[str, Tool]:
        tools = toolkit.new_episode(is_correct)
        return {name: tool for name, tool in tools.items() if name in question.meta["offered"]}


def _with(question: Question, kind: str, offered: tuple[str, ...]) -> Question:
    return Question(question.id, question.question, question.answers, question.kind,
                    {**question.meta, "type": kind, "offered": offered})


def _request(seed: int, split: str, i: int, offered: tuple[str, ...]) -> Question:
    """The i-th general request of a split, answered by its correct reply (seeded by world seed, split and i)."""
    request, reply = general_exchange(random.Random(f"{seed}/{split}/request/{i}"))
    return Question(f"{split}-request-{i:04d}", request, (reply,), "text",
                    {"type": "request", "split": split, "offered": offered})


def hallucinated_calls(record: Mapping) -> int:
    """How many of an episode's tool calls (a transcript record) should not have happened."""
    meta = record["meta"]
    allowed = {"finish"} if meta["type"] in NO_TOOL_KINDS else set(meta["offered"])
    actions = (parse_action(call["action"]) for call in record["tool_calls"] if call["action"])
    return sum(action.name not in allowed for action in actions if action is not None)


def hallucination_rates(records: Iterable[Mapping]) -> dict[str, float]:
    """% of episodes with a hallucinated call: per kind and over all ("all")."""
    records = list(records)
    by_kind = {kind: [r for r in records if r["meta"]["type"] == kind] for kind in (*NO_TOOL_KINDS, "missing_tool")}
    rate = lambda rs: 100 * sum(hallucinated_calls(r) > 0 for r in rs) / len(rs) if rs else 0.0  # noqa: E731
    return {"all": rate(records), **{kind: rate(rs) for kind, rs in by_kind.items()}}
