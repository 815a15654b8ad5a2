"""agentjax's own trajectory format: JSONL, one Conversation per line with every field, read and written losslessly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from agentjax.util.atomic import atomic_write
from agentjax.data.conversation import ROLES, Conversation, Outcome, Turn
from agentjax.util.errors import DataError

_KEYS = {"turns", "source", "task", "method", "outcome", "id", "origin", "meta"}
_OUTCOME_KEYS = {"success", "reward", "f1"}
_METHODS = ("react", "cot", "reflexion", "chat", "")


def conversation_to_dict(conv: Conversation) -> dict[str, Any]:
    """The JSON object of one line of the native format."""
    return {
        "id": conv.id,
        "source": conv.source,
        "task": conv.task,
        "method": conv.method,
        "outcome": {"success": conv.outcome.success, "reward": conv.outcome.reward, "f1": conv.outcome.f1},
        "origin": conv.origin,
        "meta": conv.meta,
        "turns": [{"role": t.role, "content": t.content, "train": t.train} for t in conv.turns],
    }


def conversation_from_dict(record: Any, origin: str) -> Conversation:
    """Parse one native record; unknown keys and wrong types are errors naming the field."""
    if not isinstance(record, dict):
        raise DataError(origin, "bad_type", f"expected a JSON object, got {type(record).__name__}")
    _check_keys(record, _KEYS, origin, "")
    turns = record.get("turns")
    if not isinstance(turns, list) or not turns:
        raise DataError(origin, "missing_field" if turns is None else "bad_type", "turns: expected a non-empty list")
    parsed = []
    for i, t in enumerate(turns):
        where = f"turns[{i}]."
        if not isinstance(t, dict):
            raise DataError(origin, "bad_type", f"turns[{i}]: expected an object")
        _check_keys(t, {"role", "content", "train"}, origin, where)
        if t.get("role") not in ROLES:
            raise DataError(origin, "unknown_role", f"{where}role: unknown role {t.get('role')!r}; expected one of {list(ROLES)}")
        parsed.append(Turn(t["role"], _typed(t, "content", str, origin, where), _typed(t, "train", bool, origin, where, False)))
    outcome = record.get("outcome") or {}
    if not isinstance(outcome, dict):
        raise DataError(origin, "bad_type", "outcome: expected an object")
    _check_keys(outcome, _OUTCOME_KEYS, origin, "outcome.")
    method = record.get("method", "")
    if method not in _METHODS:
        raise DataError(origin, "bad_value", f"method: {method!r} is not one of {list(_METHODS)}")
    meta = record.get("meta") or {}
    if not isinstance(meta, dict):
        raise DataError(origin, "bad_type", "meta: expected an object")
    return Conversation(
        turns=tuple(parsed),
        source=_typed(record, "source", str, origin, "", ""),
        task=_typed(record, "task", str, origin, "", ""),
        method=method,
        outcome=Outcome(
            success=_typed(outcome, "success", bool, origin, "outcome.", None),
            reward=_number(outcome, "reward", origin),
            f1=_number(outcome, "f1", origin),
        ),
        id=_typed(record, "id", str, origin, "", ""),
        origin=_typed(record, "origin", str, origin, "", "") or origin,
        meta=meta,
    )


def write_conversations(path: str | Path, conversations: Iterable[Conversation]) -> int:
    """Write conversations as native JSONL, atomically (the file appears complete or not at all); returns the count."""
    count = 0
    with atomic_write(path) as f:
        for conv in conversations:
            try:
                line = json.dumps(conversation_to_dict(conv), ensure_ascii=False, allow_nan=False)
            except (TypeError, ValueError) as e:
                raise ValueError(f"conversation {conv.id or count}: cannot be written as JSON: {e}") from None
            f.write(line + "\n")
            count += 1
    return count


def _check_keys(record: dict, known: set[str], origin: str, where: str) -> None:
    """Unknown keys are errors: a typo must not silently drop a field."""
    unknown = sorted(set(record) - known)
    if unknown:
        raise DataError(origin, "unknown_field", f"{where}{unknown[0]}: unknown key; known keys: {sorted(known)}")


_MISSING = object()


def _typed(record: dict, key: str, kind: type, origin: str, where: str, default: Any = _MISSING) -> Any:
    """`record[key]` checked to be of `kind`; `default` when absent (required when no default)."""
    value = record.get(key, default)
    if value is _MISSING:
        raise DataError(origin, "missing_field", f"{where}{key}: missing")
    if value is not default and not isinstance(value, kind):
        raise DataError(origin, "bad_type", f"{where}{key}: expected {kind.__name__}, got {value!r:.60}")
    return value


def _number(outcome: dict, key: str, origin: str) -> float | None:
    """An optional number of the outcome (booleans are not numbers here)."""
    value = outcome.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataError(origin, "bad_type", f"outcome.{key}: expected a number, got {value!r:.60}")
    return float(value)
