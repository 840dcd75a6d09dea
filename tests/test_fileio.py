"""hazremote.fileio: files appear whole or not at all, and nothing is left behind (§6)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hazremote.fileio import publish, replace_file


def test_exclusive_publish_keeps_the_first_and_removes_every_temp(tmp_path: Path) -> None:
    """Of two writers publishing one name without replace, the first wins; both temps go."""
    first, second = tmp_path / "t1", tmp_path / "t2"
    first.write_bytes(b"first")
    second.write_bytes(b"second")
    assert publish(first, tmp_path / "name", replace=False, fsync=True) is True
    assert publish(second, tmp_path / "name", replace=False, fsync=True) is False
    assert (tmp_path / "name").read_bytes() == b"first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["name"]


def test_replacing_publish_replaces(tmp_path: Path) -> None:
    (tmp_path / "name").write_bytes(b"old")
    temp = tmp_path / "t"
    temp.write_bytes(b"new")
    assert publish(temp, tmp_path / "name", replace=True, fsync=False) is True
    assert (tmp_path / "name").read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["name"]


def test_failed_publish_removes_its_temp(tmp_path: Path) -> None:
    """A name the file system refuses (a directory is in the way) raises; the temp is gone."""
    (tmp_path / "name").mkdir()
    (tmp_path / "name" / "inside").write_bytes(b"kept")
    temp = tmp_path / "t"
    temp.write_bytes(b"new")
    with pytest.raises(IsADirectoryError):
        publish(temp, tmp_path / "name", replace=True, fsync=False)
    assert not temp.exists()
    assert (tmp_path / "name" / "inside").read_bytes() == b"kept"


def test_replace_file_is_whole_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "state.bin"
    replace_file(target, b"one", fsync=True)
    replace_file(target, b"two", prefix=".state-")
    assert target.read_bytes() == b"two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["state.bin"]
    (tmp_path / "dir").mkdir()
    with pytest.raises(IsADirectoryError):
        replace_file(tmp_path / "dir", b"three")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir", "sub"]
