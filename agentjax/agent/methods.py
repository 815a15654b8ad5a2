"""How an episode starts and how an action is read from a reply, for ReAct, CoT and Reflexion.

All three write `Thought: ...` and `Action: tool[argument]` (CoT finishes in one reply; Reflexion
reflects after a wrong answer and retries), so one reader serves them; chat-format replies put the
tool call at the end. The first conversation is built the way the training data was: the question
as the user turn, behind an optional system prompt, with NAT's positive condition when asked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from agentjax.data.conditioning import condition_for_inference
from agentjax.data.config import ConditioningConfig
from agentjax.data.conversation import Conversation, Turn

Method = Literal["react", "cot", "reflexion"]
_ACTION_LINE = re.compile(r"Action:\s*(.*)", re.DOTALL)
_TRAILING_CALL = re.compile(r"([A-Za-z_]\w*\[[^\[\]]*\])\s*$")


@dataclass(frozen=True)
class EpisodeStart:
    """What every episode's conversation begins with."""

    system_prompt: str = ""  # e.g. tool descriptions, or few-shot examples for a prompted (not fine-tuned) model
    conditioning: ConditioningConfig | None = None  # NAT: inference always asks for the positive outcome

    def conversation(self, question_text: str, question_id: str = "") -> Conversation:
        turns = ((Turn("system", self.system_prompt),) if self.system_prompt else ()) + (Turn("user", question_text),)
        conv = Conversation(turns=turns, id=question_id)
        return conv if self.conditioning is None else condition_for_inference(conv, self.conditioning)


def extract_action(reply: str) -> str | None:
    """The action text of a reply: after its last `Action:`, else a trailing `tool[argument]`; None if neither."""
    at = reply.rfind("Action:")
    if at >= 0:
        return _ACTION_LINE.match(reply, at).group(1).strip() or None
    call = _TRAILING_CALL.search(reply)
    return call.group(1) if call else None
