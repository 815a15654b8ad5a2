"""How a solved episode becomes conversation turns: FireAct's ReAct text, or natural chat with tool calls (Agent-FLAN).

ReAct: assistant turns `Thought: ...\\nAction: tool[arg]`, observations as `tool` turns, the last action finish[...].
Chat: the system turn lists the tools; a reply that calls a tool ends with a line `tool[arg]`; the final reply
calls none and ends with "the answer is X." (the agent loop reads it back with `agent.methods.stated_answer`).
"""

from __future__ import annotations

from dataclasses import dataclass

from agentjax.data.conversation import Conversation, Turn
from agentjax.data.prompts import react_prompt


@dataclass(frozen=True)
class Step:
    """One agent step: its reasoning, the action it wrote (`search[X]`), and what the tool returned."""

    thought: str
    action: str
    observation: str


def react_turns(question: str, steps: list[Step]) -> list[Turn]:
    """The question, then one Thought/Action turn per step, each followed by its observation (except the last)."""
    turns = [Turn("user", question)]
    for i, step in enumerate(steps):
        turns.append(Turn("assistant", f"Thought: {step.thought}\nAction: {step.action}", train=True))
        if i < len(steps) - 1:
            turns.append(Turn("tool", step.observation))
    return turns


def chat_system_prompt(listed: str) -> str:
    """The system turn of chat-format conversations: how to call a tool, the `listed` tools, how to answer.

    `listed` is `tools.base.tool_list(...)`, or at evaluation the placeholder that each episode's tools replace."""
    return ("You answer questions about a world of invented people, places and organisations. To use a tool, end "
            f"your reply with one line such as search[Name]. Tools:\n{listed}\n"
            "Do not call a tool when none is needed. End the final reply to a question with: the answer is ...")


def chat_turns(system: str, question: str, steps: list[Step]) -> list[Turn]:
    """System and question, then a reply per step: each ends with its tool call, the last one with the answer."""
    turns = [Turn("system", system), Turn("user", question)]
    for step in steps[:-1]:
        turns.append(Turn("assistant", f"{step.thought}\n{step.action}", train=True))
        turns.append(Turn("tool", step.observation))
    turns.append(Turn("assistant", steps[-1].thought, train=True))
    return turns


def react_system_prompt(tool_descriptions: str, examples: list[Conversation]) -> str:
    """The system turn that asks a model nobody fine-tuned for ReAct steps about the world: the tools, the step
    format, and worked `examples` (solved ReAct conversations) written out as text."""
    return react_prompt("You answer questions about a world of invented people, places and organisations. You know "
                        "nothing about it: find every fact with the tools.", tool_descriptions, examples)
