"""Write files atomically (temp file in the same folder, then rename) so no reader sees a partial output; the file
gets the permissions a plain `open` would give it (temp files are created private)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

UMASK = os.umask(0o022)  # read once at import (reading it means setting it, which is not thread-safe) ...
os.umask(UMASK)  # ... and put back at once
FILE_MODE, DIRECTORY_MODE = 0o666 & ~UMASK, 0o777 & ~UMASK  # what open() / mkdir() would create


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w", encoding: str | None = "utf-8"):
    """Yield a file handle; `path` appears, complete, only if the block finishes without an exception."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, FILE_MODE)  # mkstemp makes it 0600: results would be unreadable to anyone else
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
