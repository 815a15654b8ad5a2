"""Strict reading of input files, each record with its `file:line`: JSON arrays or JSON lines, whole JSON, CSV."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Iterator

from agentjax.util.errors import DataError

_WHITESPACE = " \t\r\n"


def iter_records(path: str | Path) -> Iterator[tuple[str, Any]]:
    """Yield `(origin, record)`; a JSONL line that is not valid JSON yields a DataError in place of the record.

    The container is told by content: a file whose first character is `[` is one JSON array, otherwise
    JSONL (blank lines are ignored). A broken JSON array is an error for the whole file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(str(path), "missing_file", "file not found")
    with open(path, encoding="utf-8") as f:
        first = f.read(4096).lstrip(_WHITESPACE + "\ufeff")[:1]
    if first == "[":
        yield from _iter_json_array(path)
    else:
        yield from _iter_jsonl(path)


def _iter_jsonl(path: Path) -> Iterator[tuple[str, Any]]:
    """One record per non-blank line; a line that is not JSON becomes a DataError naming it."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            origin = f"{path}:{lineno}"
            try:
                yield origin, json.loads(line.rstrip("\r\n"))
            except json.JSONDecodeError as e:
                yield origin, DataError(origin, "invalid_json", f"not valid JSON: {e.msg} at column {e.colno}")


def _iter_json_array(path: Path) -> Iterator[tuple[str, Any]]:
    """Decode the array element by element so each record knows the line it starts on."""
    text = path.read_text(encoding="utf-8").lstrip("\ufeff")
    decoder = json.JSONDecoder()
    line, seen = 1, 0  # line number of position `seen`, counted lazily

    def skip_ws(i: int) -> int:
        while i < len(text) and text[i] in _WHITESPACE:
            i += 1
        return i

    def fail(i: int, what: str) -> DataError:
        return DataError(f"{path}:{text.count(chr(10), 0, i) + 1}", "invalid_json", f"not a valid JSON array: {what}")

    i = skip_ws(0) + 1  # past '['
    i = skip_ws(i)
    if i < len(text) and text[i] == "]":
        return
    while True:
        try:
            record, end = decoder.raw_decode(text, i)
        except json.JSONDecodeError as e:
            raise fail(e.pos, e.msg) from None
        line += text.count("\n", seen, i)
        seen = i
        yield f"{path}:{line}", record
        i = skip_ws(end)
        if i >= len(text):
            raise fail(i, "missing ']' at the end")
        if text[i] == "]":
            if skip_ws(i + 1) != len(text):
                raise fail(i + 1, "extra data after the array")
            return
        if text[i] != ",":
            raise fail(i, "expected ',' or ']' between records")
        i = skip_ws(i + 1)


def field(record: Any, key: str, origin: str, kind: type | tuple[type, ...] = str, where: str = "") -> Any:
    """`record[key]`, checked to be of `kind`; errors name the input line and the field (`where`: its dotted prefix)."""
    if not isinstance(record, dict):
        raise DataError(origin, "bad_type", f"{where.rstrip('.') or 'record'}: expected a JSON object, got {type(record).__name__}")
    if key not in record:
        raise DataError(origin, "missing_field", f"{where}{key}: missing (fields present: {sorted(record)})")
    value = record[key]
    if not isinstance(value, kind):
        expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise DataError(origin, "bad_type", f"{where}{key}: expected {expected}, got {value!r:.80}")
    return value


def records(path: str | Path) -> Iterator[tuple[str, Any]]:
    """(`file:line`, record) for each record of a JSON array or JSON-lines file; the first bad one raises."""
    for origin, record in iter_records(path):
        if isinstance(record, DataError):
            raise record
        yield origin, record


def read_json(path: str | Path) -> Any:
    """The whole parsed JSON document (e.g. an object keyed by question id)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(str(path), "missing_file", "file not found")
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{e.lineno}", "invalid_json", f"not valid JSON: {e.msg}") from None


def read_csv(path: str | Path) -> Iterator[tuple[str, list[str]]]:
    """(`file:line`, row) for each row of a CSV file (quoted fields may span lines)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(str(path), "missing_file", "file not found")
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        start = 1
        for row in reader:
            yield f"{path}:{start}", row
            start = reader.line_num + 1
