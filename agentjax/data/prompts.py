"""Prompts for a model nobody fine-tuned: the ReAct step format, the tools, and worked examples written as text."""

from __future__ import annotations

from agentjax.data.conversation import Conversation


def react_text(conv: Conversation) -> str:
    """A ReAct conversation as plain text: Question, then Thought/Action and Observation lines."""
    lines = []
    for turn in conv.turns:
        if turn.role == "user":
            lines.append(f"Question: {turn.content}")
        elif turn.role == "tool":
            lines.append(f"Observation: {turn.content}")
        elif turn.role == "assistant":
            lines.append(turn.content)
    return "\n".join(lines)


def react_prompt(intro: str, tools: str, examples: list[Conversation]) -> str:
    """A system turn asking for ReAct steps: `intro`, the step format, the `tools`, and worked `examples`."""
    shown = "\n\n".join(react_text(example) for example in examples)
    return (f"{intro} Reply with one step at a time, exactly in this form:\n"
            "Thought: your reasoning\nAction: one tool call\n"
            f"Then wait for the Observation. Tools:\n{tools}\n"
            f"Finish with finish[answer], the answer alone (a name, a number, yes or no).\n\nExamples:\n\n{shown}")
