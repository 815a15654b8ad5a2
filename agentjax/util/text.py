"""Input files as UTF-8 text (a leading byte-order mark dropped); bytes that are not UTF-8 are a DataError naming
the file, line and column, never a bare UnicodeDecodeError.

Whole-file readers that must keep going past a bad record (JSON arrays, CSV) decode with `surrogateescape`: the
undecodable bytes become lone surrogates, and `undecodable(text)` finds them in the record that holds them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

from agentjax.util.errors import DataError
from agentjax.util.storage import as_path

BOM = b"\xef\xbb\xbf"
_ESCAPED = re.compile("[\udc80-\udcff]")  # what surrogateescape turns undecodable bytes into


def _decode_line(raw: bytes, origin: str) -> str:
    """One line's text; DataError (`invalid_utf8`) naming `origin` and the column when it is not UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(origin, "invalid_utf8", f"not valid UTF-8: byte 0x{raw[e.start]:02x} at column {e.start + 1}") from None


def read_lines(path: str | Path) -> Iterator[tuple[int, str | DataError]]:
    """(line number, text) for each line, end of line kept; a line that is not UTF-8 gives a DataError instead."""
    with as_path(path).open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            if lineno == 1 and raw.startswith(BOM):
                raw = raw[len(BOM):]
            try:
                yield lineno, _decode_line(raw, f"{path}:{lineno}")
            except DataError as e:
                yield lineno, e


def read_text(path: str | Path) -> str:
    """The whole file's text; DataError naming the line and column of the first byte that is not UTF-8."""
    raw = as_path(path).read_bytes().removeprefix(BOM)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line_start = raw.rfind(b"\n", 0, e.start) + 1
        line = raw.count(b"\n", 0, e.start) + 1
        raise DataError(f"{path}:{line}", "invalid_utf8",
                        f"not valid UTF-8: byte 0x{raw[e.start]:02x} at column {e.start - line_start + 1}") from None


def read_text_escaped(path: str | Path) -> str:
    """The whole file's text with undecodable bytes kept as lone surrogates (see `undecodable`)."""
    return as_path(path).read_bytes().removeprefix(BOM).decode("utf-8", "surrogateescape")


def undecodable(text: str) -> bool:
    """Whether `text` (from `read_text_escaped`) holds bytes that were not UTF-8."""
    return _ESCAPED.search(text) is not None
