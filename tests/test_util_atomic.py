"""Atomic outputs: a file or directory appears whole or not at all, with the permissions a plain open() / mkdir()
would give it (the temp files they start as are private to their writer)."""

import stat

import pytest

from agentjax.util.atomic import atomic_directory
from agentjax.util.atomic import atomic_write


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_file_appears_whole_with_the_mode_open_gives(tmp_path):
    """The written file has open()'s permissions (mkstemp's 0600 made results unreadable to others)."""
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    with atomic_write(tmp_path / "out.json") as f:
        f.write("{}\n")
    assert (tmp_path / "out.json").read_text() == "{}\n" and _mode(tmp_path / "out.json") == _mode(plain)


def test_a_failed_write_leaves_nothing(tmp_path):
    """An exception inside the block leaves neither the file nor its temp file."""
    with pytest.raises(RuntimeError):
        with atomic_write(tmp_path / "out.json") as f:
            f.write("partial")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_a_directory_appears_whole_with_the_mode_mkdir_gives(tmp_path):
    """A converted model's directory has mkdir()'s permissions (mkdtemp's 0700 made it private to its writer)."""
    (tmp_path / "plain").mkdir()
    with atomic_directory(tmp_path / "model") as tmp:
        (tmp / "config.json").write_text("{}")
    assert (tmp_path / "model" / "config.json").exists() and _mode(tmp_path / "model") == _mode(tmp_path / "plain")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "plain"]
