"""Reading JSON, JSONL and CSV inputs with errors that name the file, the line or item, and the field."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Iterator


class InputFileError(ValueError):
    """An input file is missing or malformed; the message says where (file:line or file[item]) and which field."""


def read_json(path: str | Path) -> Any:
    """The parsed content of a JSON file."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: file not found")
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise InputFileError(f"{path}:{e.lineno}: not valid JSON: {e.msg}") from None


def read_jsonl(path: str | Path) -> Iterator[tuple[str, Any]]:
    """Yield (`file:line`, parsed object) for each non-blank line of a JSON-lines file."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: file not found")
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                yield where, json.loads(line)
            except json.JSONDecodeError as e:
                raise InputFileError(f"{where}: not valid JSON: {e.msg}") from None


def read_csv(path: str | Path) -> Iterator[tuple[str, list[str]]]:
    """Yield (`file:line`, row) for each row of a CSV file (quoted fields may span lines)."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: file not found")
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        start = 1
        for row in reader:
            yield f"{path}:{start}", row
            start = reader.line_num + 1


def field(record: Any, name: str, where: str, kind: type | tuple[type, ...] = str) -> Any:
    """`record[name]`, checked to be a mapping holding a value of type `kind`."""
    if not isinstance(record, dict):
        raise InputFileError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if name not in record:
        raise InputFileError(f"{where}: field {name!r} is missing (fields present: {sorted(record)})")
    value = record[name]
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise InputFileError(f"{where}: field {name!r} should be {names}, got {value!r:.80}")
    return value
