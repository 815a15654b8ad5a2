"""The Tool interface and the action syntax `name[argument]` that agents write."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

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
