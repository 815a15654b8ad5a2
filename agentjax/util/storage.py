"""Local paths and bucket URLs (gs://) behind one path type, for every output a run, an evaluation or a conversion writes.

`as_path` gives a pathlib.Path for a local path and an etils.epath.Path for a URL; both offer the pathlib calls
agentjax uses (`/`, exists, is_file, open, read_bytes, iterdir, ...). A bucket has no directories to create or
rename and no objects to append to: `make_dirs` does nothing there, atomic writes upload once (util/atomic.py),
and `AppendFile` rewrites the object.

gs:// goes through gcsfs (fsspec), for agentjax's own files and for orbax's directory calls alike: it honours
STORAGE_EMULATOR_HOST, so a local GCS API tests the same code a TPU VM runs (TensorFlow's GCS client, which
etils would pick otherwise, has no endpoint override). Orbax writes arrays with tensorstore, whose GCS endpoint
is TENSORSTORE_GCS_HTTP_URL.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import re
import time
from pathlib import Path

from etils import epath

from agentjax.util.errors import DataError

os.environ.setdefault("EPATH_USE_TF", "false")  # etils reads it on every call: gs:// through gcsfs, see above

_URL = re.compile(r"^[a-z][a-z0-9+.-]*://")
_FLATTENED_URL = re.compile(r"^(gs|s3):/(?!/)")  # what pathlib.Path makes of gs://bucket: gs:/bucket


def is_url(path: str | os.PathLike) -> bool:
    """Whether `path` names an object store location (gs://bucket/...) rather than a local file."""
    return bool(_URL.match(os.fspath(path)))


def as_path(path: str | os.PathLike) -> Path | epath.Path:
    """The path type for `path`: pathlib.Path when local, etils.epath.Path for a URL (gcsfs needed for gs://)."""
    text = os.fspath(path)
    if _FLATTENED_URL.match(text):  # a URL passed through pathlib.Path on its way here
        text = text.replace(":/", "://", 1)
    if not is_url(text):
        return path if isinstance(path, Path) else Path(text)
    if text.startswith("gs://") and importlib.util.find_spec("gcsfs") is None:
        raise DataError(text, "no_gcsfs", "gs:// paths need gcsfs: pip install gcsfs (it comes with agentjax's tpu "
                        "extra: pip install -e '.[tpu]')")
    return epath.Path(text)


def absolute(path: str | os.PathLike) -> Path | epath.Path:
    """`as_path(path)`, made absolute when local (orbax wants absolute directories; URLs already are)."""
    path = as_path(path)
    return path if is_url(path) else path.absolute()


def glob_files(pattern: str) -> list[Path | epath.Path]:
    """The files a glob pattern matches, sorted; a URL's pattern is matched by listing its bucket."""
    if not is_url(pattern):
        return [Path(m) for m in sorted(glob.glob(pattern))]
    parts = pattern.split("/")
    first = next(i for i, part in enumerate(parts) if glob.has_magic(part))
    return sorted(p for p in as_path("/".join(parts[:first])).glob("/".join(parts[first:])) if p.is_file())


def make_dirs(path: Path | epath.Path) -> None:
    """Create the directory `path` and its parents; nothing to do in a bucket (its "directories" are key prefixes)."""
    if not is_url(path):
        path.mkdir(parents=True, exist_ok=True)


class AppendFile:
    """A text file lines are appended to, each line kept once written.

    Locally the file is opened for appending and flushed after each write. An object in a bucket cannot be
    appended to: its text is held here and the object rewritten whole, at most every `upload_every_s` seconds
    and when closed; a killed writer loses only what it wrote since the last upload.
    """

    def __init__(self, path: str | os.PathLike, upload_every_s: float = 0.0):
        self.path = as_path(path)
        self.remote = is_url(self.path)
        self.upload_every_s = upload_every_s
        if self.remote:
            self._parts = [self.path.read_text(encoding="utf-8")] if self.path.exists() else []
            self._unsaved, self._uploaded_at = False, float("-inf")
        else:
            self._file = open(self.path, "a", encoding="utf-8")

    def write(self, text: str) -> None:
        if not self.remote:
            self._file.write(text)
            self._file.flush()
            return
        self._parts.append(text)
        self._unsaved = True
        if time.monotonic() - self._uploaded_at >= self.upload_every_s:
            self.flush()

    def flush(self) -> None:
        """Make everything written so far durable (an upload of the whole object in a bucket)."""
        if not self.remote:
            self._file.flush()
        elif self._unsaved:
            self.path.write_text("".join(self._parts), encoding="utf-8")
            self._unsaved, self._uploaded_at = False, time.monotonic()

    def close(self) -> None:
        self.flush()
        if not self.remote:
            self._file.close()

    def __enter__(self) -> "AppendFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
