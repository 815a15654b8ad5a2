"""The Tool interface and the action syntax `name[argument]` that agents write."""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass
from typing import Callable, Literal, Mapping, Protocol, runtime_checkable

logger = logging.getLogger(__name__)
OBSERVATION_MAX_CHARS = 4000  # what one observation may add to the context (and to transcripts)
_ACTION = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*\[(.*)\]\s*$", re.DOTALL)


@dataclass(frozen=True)
class Action:
    """A parsed tool call: the tool's name and its raw argument text."""

    name: str
    argument: str


def parse_action(text: str) -> Action | None:
    """Parse `search[some query]`; None when the text is not of that form."""
    m = _ACTION.match(text)
    if m is None:
        return None
    return Action(m.group(1).lower(), m.group(2).strip())


class ToolError(Exception):
    """A tool could not answer; the agent sees the message as its observation and goes on."""


@runtime_checkable
class Tool(Protocol):
    """Something the agent can call: `name[argument]` -> observation text."""

    name: str
    description: str

    def __call__(self, argument: str) -> str:
        """Run the tool; raise ToolError with a message the agent may read when it cannot answer."""
        ...


@dataclass(frozen=True)
class FunctionTool:
    """A Tool made from a function, e.g. a method of an object holding one episode's state."""

    name: str
    description: str
    function: Callable[[str], str]

    def __call__(self, argument: str) -> str:
        return self.function(argument)


@dataclass(frozen=True)
class ToolResult:
    """The observation an action produced and how the call went (`ok`, `finished`, `tool_error`, `invalid_action`)."""

    observation: str
    status: Literal["ok", "finished", "tool_error", "invalid_action"]
    action: Action | None = None


def tool_list(tools: Mapping[str, Tool]) -> str:
    """`- name[argument]: what it does` per tool an agent calls for information (not those that end an episode)."""
    return "\n".join(f"- {t.description}" for t in tools.values() if not getattr(t, "ends_episode", False))


def run_action(tools: Mapping[str, Tool], text: str, max_chars: int = OBSERVATION_MAX_CHARS) -> ToolResult:
    """Parse `name[argument]` and call the tool; bad actions and tool failures become observations, not exceptions.

    Every observation (a tool's answer, an echo of the action, an error) is cut to `max_chars`, the cut marked.
    """
    result = _call(tools, text)
    return dataclasses.replace(result, observation=cap(result.observation, max_chars))


def cap(text: str, max_chars: int) -> str:
    """`text`, or its first `max_chars` characters followed by a note saying how many were cut."""
    if len(text) <= max_chars:
        return text
    return f"{text[:max_chars]} [... {len(text) - max_chars:,} more characters cut]"


def _call(tools: Mapping[str, Tool], text: str) -> ToolResult:
    """The uncut result of running the action in `text`."""
    action = parse_action(text)
    if action is None:
        return ToolResult(f"Invalid action {text.strip()!r}: write one of {_usage(tools)}.", "invalid_action")
    tool = tools.get(action.name)
    if tool is None:
        return ToolResult(f"Invalid action: there is no tool {action.name!r}; use one of {_usage(tools)}.",
                          "invalid_action", action)
    try:
        observation = tool(action.argument)
    except ToolError as e:
        return ToolResult(f"The {action.name} tool failed: {e}", "tool_error", action)
    except Exception as e:  # a bug in a tool must not end a whole evaluation; it is logged and counted
        logger.exception("tool %s raised on %r", action.name, action.argument[:200])
        return ToolResult(f"The {action.name} tool failed: {type(e).__name__}: {e}", "tool_error", action)
    return ToolResult(observation, "finished" if getattr(tool, "ends_episode", False) else "ok", action)


def _usage(tools: Mapping[str, Tool]) -> str:
    """`search[...], finish[...]` for the given tools."""
    return ", ".join(f"{name}[...]" for name in tools)
