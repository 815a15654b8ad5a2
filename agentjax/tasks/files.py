"""Strict reading of task and tool inputs; errors are agentjax.data's DataError, naming file:line and the field."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Iterator

from agentjax.data.errors import DataError
from agentjax.data.records import iter_records


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
