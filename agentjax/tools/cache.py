"""An on-disk JSON cache for tool responses: one file per key, written atomically, safe across threads."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from agentjax.util.atomic import atomic_write

log = logging.getLogger(__name__)


class DiskCache:
    """Maps a JSON-able key (tool name + arguments) to a JSON value under `directory/ab/abcdef….json`."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory).expanduser()

    def _path(self, key: Any) -> Path:
        digest = hashlib.sha256(json.dumps(key, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
        return self.directory / digest[:2] / f"{digest}.json"

    def get(self, key: Any) -> Any | None:
        """The stored value, or None when absent or unreadable (an unreadable entry is logged and refetched)."""
        path = self._path(key)
        try:
            with open(path, encoding="utf-8") as f:
                return json.load(f)["value"]
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("ignoring unreadable cache entry %s: %s", path, e)
            return None

    def put(self, key: Any, value: Any) -> None:
        """Store `value` (temporary file + rename, so a reader never sees half an entry; last writer wins)."""
        with atomic_write(self._path(key)) as f:
            json.dump({"key": key, "value": value}, f, ensure_ascii=False)
