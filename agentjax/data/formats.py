"""Streaming readers for every trajectory format in FORMATS.md; each turns one JSON record into a Conversation."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, Iterator

from agentjax.data.conversation import Conversation, Outcome, Turn
from agentjax.util.errors import BadInputPolicy, DataError
from agentjax.data.native import conversation_from_dict
from agentjax.util.records import field, iter_records

OBSERVATION_PREFIX = "Observation: "
_EPISODE_END = re.compile(r"^Episode finished, reward = (\S+)\s*$")


def read_conversations(
    path: str | Path, fmt: str = "agentjax", *, bad_input: BadInputPolicy | None = None
) -> Iterator[Conversation]:
    """Yield the conversations of one file in format `fmt`; bad records raise DataError or are counted (skip mode).

    Every conversation's `origin` is `file:line` (the native format keeps a stored origin).
    """
    parse = parser_for(fmt)
    policy = bad_input or BadInputPolicy("raise")
    for origin, record in iter_records(path):
        try:
            if isinstance(record, DataError):
                raise record
            conv = parse(record, origin)
        except DataError as e:
            policy.handle(e)
            continue
        yield conv


def parser_for(fmt: str) -> Callable[[Any, str], Conversation]:
    """The record parser of format `fmt`, or a ValueError listing the known formats."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown data format {fmt!r}; known formats: {sorted(FORMATS)}")
    return FORMATS[fmt]


# --- shared pieces -------------------------------------------------------------------------------


def _train_flag(loss: Any, role: str, origin: str, where: str) -> bool:
    """An explicit boolean `loss` wins; absent or null means: train assistant turns only."""
    if loss is None:
        return role == "assistant"
    if isinstance(loss, bool):
        return loss
    raise DataError(origin, "bad_type", f"{where}: expected true, false or null, got {loss!r:.60}")


def _message_turns(
    items: Any, origin: str, where: str, role_key: str, content_key: str, roles: dict[str, str], loss_key: str = "loss"
) -> list[Turn]:
    """Turns from a list of `{role_key, content_key, loss_key}` objects, mapping role names through `roles`."""
    if not isinstance(items, list) or not items:
        raise DataError(origin, "no_turns", f"{where}: expected a non-empty list of messages")
    turns = []
    for i, item in enumerate(items):
        here = f"{where}[{i}]."
        name = field(item, role_key, origin, str, here)
        if name not in roles:
            raise DataError(origin, "unknown_role", f"{here}{role_key}: unknown role {name!r}; expected one of {sorted(roles)}")
        role = roles[name]
        content = field(item, content_key, origin, str, here)
        turns.append(Turn(role, content, _train_flag(item.get(loss_key), role, origin, here + loss_key)))
    return turns


def _observations_as_tools(turns: list[Turn]) -> list[Turn]:
    """ReAct-style data writes tool results as user turns `Observation: ...`; make them tool turns (prefix removed)."""
    return [
        Turn("tool", t.content[len(OBSERVATION_PREFIX) :], t.train)
        if i > 0 and t.role == "user" and t.content.startswith(OBSERVATION_PREFIX)
        else t
        for i, t in enumerate(turns)
    ]


def _episode_outcome(turns: list[Turn]) -> Outcome:
    """FireAct ends a trajectory with the observation `Episode finished, reward = X`; read X when present."""
    if not turns or turns[-1].role != "tool":
        return Outcome()
    m = _EPISODE_END.match(turns[-1].content)
    if m is None:
        return Outcome()
    raw = m.group(1)
    try:
        reward = {"True": 1.0, "False": 0.0}[raw] if raw in ("True", "False") else float(raw)
    except ValueError:
        return Outcome()
    return Outcome(success=reward >= 1.0, reward=reward)


def _react_method(turns: list[Turn]) -> str:
    """FireAct mixes methods in one file: a reflection step marks Reflexion, a lone answering turn CoT (heuristics)."""
    replies = [t.content for t in turns if t.role == "assistant"]
    if any("reflection" in r.lower() for r in replies):
        return "reflexion"
    return "cot" if len(replies) == 1 else "react"


# --- one parser per format -----------------------------------------------------------------------

_CHAT_ROLES = {"system": "system", "user": "user", "assistant": "assistant"}


def parse_fireact(record: Any, origin: str) -> Conversation:
    """FireAct gpt format: `{"messages": [{role, content}]}`, observations as user turns, reward in the last one."""
    turns = _observations_as_tools(_message_turns(field(record, "messages", origin, list), origin, "messages", "role", "content", _CHAT_ROLES))
    return Conversation(turns, method=_react_method(turns), outcome=_episode_outcome(turns), origin=origin)


def parse_fireact_alpaca(record: Any, origin: str) -> Conversation:
    """FireAct alpaca format: question in `instruction` (+ `input`), the whole trajectory text in `output`."""
    question = field(record, "instruction", origin, str)
    extra = record.get("input") or ""
    if not isinstance(extra, str):
        raise DataError(origin, "bad_type", f"input: expected str, got {extra!r:.60}")
    output = field(record, "output", origin, str)
    turns = [Turn("user", question + ("\n" + extra if extra else ""))] + split_react_text(output)
    if len(turns) == 1:
        raise DataError(origin, "no_turns", "output: empty trajectory")
    return Conversation(turns, method=_react_method(turns), outcome=_episode_outcome(turns), origin=origin)


def split_react_text(text: str) -> list[Turn]:
    """Split plain ReAct text into assistant turns and one-line `Observation: ...` tool turns."""
    chunks = re.split(r"(?m)^" + re.escape(OBSERVATION_PREFIX), text)
    turns = [Turn("assistant", chunks[0].removesuffix("\n"), True)] if chunks[0] else []
    for chunk in chunks[1:]:
        observation, _, reply = chunk.partition("\n")
        turns.append(Turn("tool", observation))
        if reply:
            turns.append(Turn("assistant", reply.removesuffix("\n"), True))
    return turns


_SHAREGPT_ROLES = {
    "system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
    "observation": "tool", "function": "tool", "tool": "tool",
}


def parse_sharegpt(record: Any, origin: str) -> Conversation:
    """ShareGPT and AgentInstruct: `{"id", "conversations": [{from, value, loss?}]}`; `loss` selects trained turns."""
    turns = _message_turns(field(record, "conversations", origin, list), origin, "conversations", "from", "value", _SHAREGPT_ROLES)
    return Conversation(turns, id=_record_id(record, origin), origin=origin)


def parse_nat(record: Any, origin: str) -> Conversation:
    """NAT: `{"conversations": [{role, content, loss}], "label": positive|negative}`, observations as user turns."""
    turns = _observations_as_tools(_message_turns(field(record, "conversations", origin, list), origin, "conversations", "role", "content", _CHAT_ROLES))
    label = record.get("label")
    if label not in (None, "positive", "negative"):
        raise DataError(origin, "bad_value", f"label: expected 'positive' or 'negative', got {label!r:.60}")
    outcome = Outcome() if label is None else Outcome(success=label == "positive")
    return Conversation(turns, method="react", outcome=outcome, id=_record_id(record, origin), origin=origin)


def parse_agentflan(record: Any, origin: str) -> Conversation:
    """Agent-FLAN: `{"id", "conversation": [{role, content, loss}]}` with tool results as `function` turns."""
    roles = dict(_CHAT_ROLES, function="tool", tool="tool")
    turns = _message_turns(field(record, "conversation", origin, list), origin, "conversation", "role", "content", roles)
    return Conversation(turns, method="chat", id=_record_id(record, origin), origin=origin)


def parse_openai(record: Any, origin: str) -> Conversation:
    """OpenAI messages: assistant `tool_calls` are written into the turn as `name[arguments]` lines; `weight` 0/1 selects trained turns."""
    roles = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool", "function": "tool"}
    normalised = []
    for i, m in enumerate(field(record, "messages", origin, list)):
        here = f"messages[{i}]"
        if not isinstance(m, dict):
            raise DataError(origin, "bad_type", f"{here}: expected a JSON object, got {type(m).__name__}")
        content = m.get("content")
        if content is not None and not isinstance(content, str):
            raise DataError(origin, "bad_type", f"{here}.content: expected a string or null, got {content!r:.60}")
        lines = [content] if content else []
        calls = m.get("tool_calls") or []
        if not isinstance(calls, list):
            raise DataError(origin, "bad_type", f"{here}.tool_calls: expected a list, got {calls!r:.60}")
        for j, call in enumerate(calls):
            function = field(call, "function", origin, dict, f"{here}.tool_calls[{j}].")
            name = field(function, "name", origin, str, f"{here}.tool_calls[{j}].function.")
            arguments = field(function, "arguments", origin, str, f"{here}.tool_calls[{j}].function.")
            lines.append(f"{name}[{arguments}]")
        weight = m.get("weight")
        if weight not in (None, 0, 1) or isinstance(weight, (bool, float)):
            raise DataError(origin, "bad_type", f"{here}.weight: expected 0 or 1, got {weight!r:.60}")
        normalised.append({"role": m.get("role"), "content": "\n".join(lines), "loss": None if weight is None else bool(weight)})
    turns = _message_turns(normalised, origin, "messages", "role", "content", roles)
    return Conversation(turns, method="chat", id=_record_id(record, origin), origin=origin)


def _record_id(record: dict, origin: str) -> str:
    """The record's optional `id` as a string."""
    value = record.get("id", "")
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise DataError(origin, "bad_type", f"id: expected a string, got {value!r:.60}")
    return str(value)


FORMATS: dict[str, Callable[[Any, str], Conversation]] = {
    "agentjax": conversation_from_dict,
    "fireact": parse_fireact,
    "fireact-alpaca": parse_fireact_alpaca,
    "agentinstruct": parse_sharegpt,
    "sharegpt": parse_sharegpt,
    "nat": parse_nat,
    "agentflan": parse_agentflan,
    "openai": parse_openai,
}
