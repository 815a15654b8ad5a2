"""How an episode starts and how an action is read from a reply, for ReAct, CoT and Reflexion.

All three write `Thought: ...` and `Action: tool[argument]` (CoT finishes in one reply; Reflexion
reflects after a wrong answer and retries), so one reader serves them; chat-format replies put the
tool call at the end and state the final answer after "the answer is". The first conversation is built the
way the training data was: the question as the user turn, behind an optional system prompt (where `{tools}`
becomes the list of the episode's own tools), with NAT's positive condition when asked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, Mapping

from agentjax.data.conditioning import condition_for_inference
from agentjax.data.config import ConditioningConfig
from agentjax.data.conversation import Conversation, Turn
from agentjax.tools.base import Tool, tool_list

Method = Literal["react", "cot", "reflexion"]
_ACTION_LINE = re.compile(r"Action:\s*(.*)", re.DOTALL)
_TRAILING_CALL = re.compile(r"([A-Za-z_]\w*\[[^\[\]]*\])\s*$")
TOOLS_PLACEHOLDER = "{tools}"  # in a system prompt: the episode's tools, one `- name[argument]: ...` line each
ANSWER_CUE = "the answer is "  # a chat-format reply that calls no tool states its answer after this


@dataclass(frozen=True)
class EpisodeStart:
    """What every episode's conversation begins with."""

    system_prompt: str = ""  # e.g. tool descriptions, or few-shot examples for a prompted (not fine-tuned) model
    conditioning: ConditioningConfig | None = None  # NAT: inference always asks for the positive outcome

    def conversation(self, question_text: str, question_id: str = "", tools: Mapping[str, Tool] = {}) -> Conversation:
        system = self.system_prompt.replace(TOOLS_PLACEHOLDER, tool_list(tools))
        turns = ((Turn("system", system),) if system else ()) + (Turn("user", question_text),)
        conv = Conversation(turns=turns, id=question_id)
        return conv if self.conditioning is None else condition_for_inference(conv, self.conditioning)


def extract_action(reply: str) -> str | None:
    """The action text of a reply: after its last `Action:`, else a trailing `tool[argument]`; None if neither."""
    at = reply.rfind("Action:")
    if at >= 0:
        return _ACTION_LINE.match(reply, at).group(1).strip() or None
    call = _TRAILING_CALL.search(reply)
    return call.group(1) if call else None


def stated_answer(reply: str) -> str:
    """The final answer of a reply that calls no tool: what follows its last "the answer is", else the whole reply."""
    start = reply.lower().rfind(ANSWER_CUE)
    return (reply if start < 0 else reply[start + len(ANSWER_CUE):]).strip().removesuffix(".").strip()
