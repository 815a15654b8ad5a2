"""Strict reading of input files, each record with its `file:line`: JSON arrays or JSON lines, whole JSON, CSV."""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path
from typing import Any, Iterator

from agentjax.util.errors import DataError
from agentjax.util.storage import as_path
from agentjax.util.text import BOM, read_lines, read_text, read_text_escaped, undecodable

_WHITESPACE = " \t\r\n"
log = logging.getLogger(__name__)


def iter_records(path: str | Path) -> Iterator[tuple[str, Any]]:
    """Yield `(origin, record)`; a record that is not valid JSON or not UTF-8 yields a DataError in its place.

    The container is told by content: a file whose first character is `[` is one JSON array, otherwise
    JSONL (blank lines are ignored). A broken JSON array is an error for the whole file.
    """
    path = as_path(path)
    if not path.is_file():
        raise DataError(str(path), "missing_file", "file not found")
    with path.open("rb") as f:
        first = f.read(4096).removeprefix(BOM).lstrip(_WHITESPACE.encode())[:1]
    if first == b"[":
        yield from _iter_json_array(path)
    else:
        yield from iter_jsonl(path)


def iter_jsonl(path: str | Path) -> Iterator[tuple[str, Any]]:
    """One record per non-blank line; a line that is not UTF-8 or not JSON becomes a DataError naming it."""
    for lineno, line in read_lines(path):
        origin = f"{path}:{lineno}"
        if isinstance(line, DataError):
            yield origin, line
        elif line.strip():
            try:
                yield origin, json.loads(line.rstrip("\r\n"))
            except json.JSONDecodeError as e:
                yield origin, DataError(origin, "invalid_json", f"not valid JSON: {e.msg} at column {e.colno}")


def read_json(path: str | Path) -> Any:
    """The whole parsed JSON document (e.g. an object keyed by question id, a model's config.json)."""
    path = as_path(path)
    if not path.is_file():
        raise DataError(str(path), "missing_file", "file not found")
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}", "invalid_json", f"not valid JSON: {e.msg}") from None


def read_log(path: str | Path, key: str, kind: type) -> list[dict]:
    """The records of an append-only JSONL log (transcripts, metrics): each a JSON object whose `key` is a `kind`.

    Any other line (torn by a kill or a full disk, corrupted) is reported as a warning naming it and left out;
    the lines after it are kept.
    """
    records = []
    for origin, record in iter_jsonl(path):
        if not isinstance(record, DataError) and not (isinstance(record, dict) and isinstance(record.get(key), kind)):
            record = DataError(origin, "bad_record", f"not a log record (a JSON object with a {kind.__name__} {key!r})")
        if isinstance(record, DataError):
            log.warning("%s; line left out", record)
        else:
            records.append(record)
    return records


def _iter_json_array(path: Path) -> Iterator[tuple[str, Any]]:
    """Decode the array element by element so each record knows the line it starts on; a record holding bytes
    that are not UTF-8 becomes a DataError (the records around it are still read)."""
    text = read_text_escaped(path)
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
        origin = f"{path}:{line}"
        if undecodable(text[i:end]):
            record = DataError(origin, "invalid_utf8", "not valid UTF-8: this record holds bytes that are no text")
        yield origin, record
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


def read_csv(path: str | Path) -> Iterator[tuple[str, list[str]]]:
    """(`file:line`, row) for each row of a CSV file (quoted fields may span lines); a row that is not UTF-8 raises."""
    path = as_path(path)
    if not path.is_file():
        raise DataError(str(path), "missing_file", "file not found")
    reader = csv.reader(io.StringIO(read_text_escaped(path), newline=""))
    start = 1
    for row in reader:
        if any(map(undecodable, row)):
            raise DataError(f"{path}:{start}", "invalid_utf8", "not valid UTF-8: this row holds bytes that are no text")
        yield f"{path}:{start}", row
        start = reader.line_num + 1
