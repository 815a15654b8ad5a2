"""Tool hallucination on the world: the right episodes are offered the right tools, and exactly the calls that
should not happen are counted."""

from collections import Counter

import pytest

from agentjax.tools.config import ToolsConfig
from agentjax.world.build import WorldConfig, build_world
from agentjax.world.hallucination import WITHHELD, WorldHallucinationTask, hallucinated_calls, hallucination_rates


@pytest.fixture(scope="module")
def task():
    return WorldHallucinationTask(build_world(WorldConfig(eval_questions_per_kind=4)))


def test_three_kinds_interleaved_and_only_arithmetic_loses_the_calculator(task):
    """Direct questions, general requests and calculator-less arithmetic alternate; each episode gets exactly the
    tools its question's meta names, and only missing_tool episodes lack `calculate`."""
    questions = task.load(split="test")
    assert [q.meta["type"] for q in questions[:3]] == ["direct", "request", "missing_tool"]
    assert Counter(q.meta["type"] for q in questions) == {"direct": 4, "request": 4, "missing_tool": 4}
    toolkit = task.toolkit(ToolsConfig(), "test")
    for q in questions:
        tools = task.episode_tools(toolkit, q, None)
        assert set(tools) == set(q.meta["offered"])
        assert (WITHHELD in tools) == (q.meta["type"] != "missing_tool")
    assert len({q.id for q in questions}) == len(questions) and task.load(split="test", limit=5) == questions[:5]


def _record(kind: str, *actions: str | None) -> dict:
    offered = ["search", "lookup", "finish"] if kind == "missing_tool" else ["search", "lookup", "calculate", "finish"]
    return {"meta": {"type": kind, "offered": offered}, "tool_calls": [{"action": a} for a in actions]}


def test_hallucinated_calls_are_tools_called_without_need_or_without_being_offered():
    """No-tool episodes may only finish; a missing-tool episode may use what it was offered, never the withheld
    tool or an invented one; unreadable actions are format errors, not hallucinations."""
    assert hallucinated_calls(_record("direct", "finish[12]")) == 0
    assert hallucinated_calls(_record("direct", "search[12]", "finish[12]")) == 1
    assert hallucinated_calls(_record("request", "calculate[1+2]", "lookup[x]")) == 2
    assert hallucinated_calls(_record("missing_tool", "search[Ann]", "finish[3]")) == 0
    assert hallucinated_calls(_record("missing_tool", "search[Ann]", "calculate[3*4]", "abacus[3*4]")) == 2
    assert hallucinated_calls(_record("request", None, "not an action")) == 0
    rates = hallucination_rates([_record("direct", "search[a]"), _record("direct"), _record("request"),
                                 _record("missing_tool", "calculate[1]")])
    assert rates == {"all": 50.0, "direct": 50.0, "request": 0.0, "missing_tool": 100.0}
