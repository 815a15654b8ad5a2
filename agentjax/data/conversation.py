"""The one in-memory form of every trajectory: a `Conversation` of `Turn`s plus where it came from."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant", "tool"]
ROLES: tuple[str, ...] = ("system", "user", "assistant", "tool")
Method = Literal["react", "cot", "reflexion", "chat", ""]


@dataclass(frozen=True)
class Turn:
    """One message. `tool` is an observation returned to the model; `train` marks supervised text."""

    role: Role
    content: str
    train: bool = False

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(f"unknown role {self.role!r}; expected one of {ROLES}")


@dataclass(frozen=True)
class Outcome:
    """How the trajectory ended, when known: success flag, raw reward, answer F1 against the gold."""

    success: bool | None = None
    reward: float | None = None
    f1: float | None = None


@dataclass(frozen=True)
class Conversation:
    """A trajectory or chat with metadata; `origin` is `file:line` so errors can point at the input."""

    turns: tuple[Turn, ...]
    source: str = ""
    task: str = ""
    method: Method = ""
    outcome: Outcome = field(default_factory=Outcome)
    id: str = ""
    origin: str = ""
    meta: dict[str, Any] = field(default_factory=dict, hash=False)  # JSON-serialisable extras (e.g. a generator's gold answer)

    def __post_init__(self):
        object.__setattr__(self, "turns", tuple(self.turns))

    def replace(self, **changes) -> "Conversation":
        return dataclasses.replace(self, **changes)

    def append(self, *turns: Turn) -> "Conversation":
        return self.replace(turns=self.turns + tuple(turns))
