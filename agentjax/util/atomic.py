"""Outputs no reader sees half written, on a local disk or in a bucket (gs://).

Locally a file is written to a temporary sibling and renamed into place, a directory is built beside its final
name and renamed; each gets the permissions a plain `open` / `mkdir` would give it (temporaries are created
private). In a bucket an object appears whole when its upload ends and nothing can be renamed: a file is
buffered and uploaded once, on success; a directory is built on local disk and uploaded with its `config.json`
last, so that a reader that finds config.json (what every agentjax and Hugging Face loader opens first) finds
the rest.
"""

from __future__ import annotations

import contextlib
import glob
import io
import logging
import os
import shutil
import tempfile
from pathlib import Path

from agentjax.util.storage import as_path, is_url, make_dirs

UMASK = os.umask(0o022)  # read once at import (reading it means setting it, which is not thread-safe) ...
os.umask(UMASK)  # ... and put back at once
FILE_MODE, DIRECTORY_MODE = 0o666 & ~UMASK, 0o777 & ~UMASK  # what open() / mkdir() would create
LAST_UPLOADED = "config.json"  # a directory's marker of completeness in a bucket
log = logging.getLogger(__name__)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8"):
    """Yield a file handle; `path` appears, complete, only if the block finishes without an exception."""
    path = as_path(path)
    if is_url(path):
        buffer = io.BytesIO() if "b" in mode else io.StringIO()
        yield buffer
        data = buffer.getvalue()
        path.write_bytes(data if isinstance(data, bytes) else data.encode(encoding or "utf-8"))
        return
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


@contextlib.contextmanager
def atomic_directory(out_dir: str | os.PathLike):
    """Yield a local temporary directory that becomes `out_dir` only if the block succeeds.

    Locally it is a sibling renamed at the end; its name carries the writer's process id, so one left behind by a
    killed writer is recognised (its process is gone) and removed by the next writer of the same `out_dir`. For a
    bucket it is a local temporary directory uploaded at the end (see the module docstring).
    """
    out_dir = as_path(out_dir)
    check_new_output(out_dir)
    if is_url(out_dir):
        with tempfile.TemporaryDirectory(prefix="agentjax-upload-") as tmp:
            yield Path(tmp)
            upload_tree(Path(tmp), out_dir)
        return
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{out_dir.name}.partial-"
    for left in out_dir.parent.glob(f"{glob.escape(prefix)}*"):
        pid = left.name[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and not _running(int(pid)):
            log.warning("removing %s, left behind by a writer that was killed", left)
            shutil.rmtree(left, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=out_dir.parent))
    try:
        tmp.chmod(DIRECTORY_MODE)  # mkdtemp makes it 0700: a converted model would be private to its writer
        yield tmp
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def upload_tree(local: Path, remote) -> None:
    """Copy the files under `local` to the same names under `remote` (streamed), the top-level config.json last."""
    files = sorted(p for p in local.rglob("*") if p.is_file())
    files.sort(key=lambda p: p == local / LAST_UPLOADED)
    for file in files:
        target = remote / file.relative_to(local).as_posix()
        make_dirs(target.parent)
        with open(file, "rb") as src, target.open("wb") as dst:
            shutil.copyfileobj(src, dst, 16 << 20)


def check_new_output(out_dir: str | os.PathLike) -> None:
    """FileExistsError unless `out_dir` is free: checked before any slow work, so a taken name fails at once.
    In a bucket any object under the prefix takes it (an upload cut off half-way leaves one without config.json)."""
    if as_path(out_dir).exists():
        raise FileExistsError(f"{out_dir} already exists; choose a new output directory or remove it")


def _running(pid: int) -> bool:
    """Whether a process with this id exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
