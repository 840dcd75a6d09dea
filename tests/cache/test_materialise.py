"""The safe materialiser (hazremote.cache.materialise): no write through a symlink, modes masked."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from hazremote.cache.materialise import (
    DirectoryFds,
    PathRefused,
    Refusal,
    chmod_nofollow,
    masked_mode,
    write_new_file,
)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "root"
    path.mkdir()
    return path


def test_write_new_file_creates_missing_directories_and_records_them(root: Path) -> None:
    with DirectoryFds(root) as dirs:
        write_new_file(dirs, "/a/b/file", [b"he", b"llo"], mode=0o640)
        assert [name for _, name in dirs.created] == ["a", "b"]
    target = root / "a" / "b" / "file"
    assert target.read_bytes() == b"hello"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640


@pytest.mark.parametrize("mode", [0o4755, 0o2755, 0o1777, 0o7777])
def test_modes_are_masked_to_permission_bits(root: Path, mode: int) -> None:
    with DirectoryFds(root) as dirs:
        write_new_file(dirs, "/x", [b""], mode=mode)
    assert stat.S_IMODE((root / "x").stat().st_mode) == mode & 0o777
    assert masked_mode(mode) == mode & 0o777


def test_symlinked_directory_in_path_is_refused_and_nothing_written_outside(
    root: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "a").mkdir()
    os.symlink(outside, root / "a" / "link")
    with DirectoryFds(root) as dirs, pytest.raises(PathRefused) as caught:
        write_new_file(dirs, "/a/link/sub/file", [b"x"], mode=0o644)
    assert caught.value.refusal is Refusal.SYMLINK
    assert caught.value.directory == "/a/link"
    assert list(outside.iterdir()) == []


def test_probe_refuses_a_symlink_component_without_creating_anything(
    root: Path, tmp_path: Path
) -> None:
    os.symlink(tmp_path, root / "link")
    with DirectoryFds(root) as dirs:
        with pytest.raises(PathRefused) as caught:
            dirs.probe("/link/deeper")
        assert caught.value.refusal is Refusal.SYMLINK
        assert dirs.probe("/absent/deeper") is False
        assert dirs.created == []
    assert sorted(os.listdir(root)) == ["link"]


def test_non_directory_in_path_is_refused(root: Path) -> None:
    (root / "file").write_bytes(b"not a directory")
    with DirectoryFds(root) as dirs, pytest.raises(PathRefused) as caught:
        write_new_file(dirs, "/file/inner", [b"x"], mode=0o644)
    assert caught.value.refusal is Refusal.NOT_A_DIRECTORY
    assert "exists and is not a directory" in str(caught.value)


def test_existing_file_or_symlink_at_the_path_is_never_overwritten(
    root: Path, tmp_path: Path
) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    os.symlink(victim, root / "link")
    (root / "present").write_bytes(b"old")
    with DirectoryFds(root) as dirs:
        with pytest.raises(FileExistsError):
            write_new_file(dirs, "/link", [b"evil"], mode=0o644)
        with pytest.raises(FileExistsError):
            write_new_file(dirs, "/present", [b"new"], mode=0o644)
    assert victim.read_bytes() == b"keep"
    assert (root / "present").read_bytes() == b"old"


def test_a_failed_write_leaves_no_partial_file(root: Path) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"part"
        raise OSError("source went away")

    with DirectoryFds(root) as dirs, pytest.raises(OSError, match="source went away"):
        write_new_file(dirs, "/partial", chunks(), mode=0o644)
    assert not (root / "partial").exists()


def test_remove_created_removes_only_empty_directories_it_made(root: Path) -> None:
    (root / "kept").mkdir()
    with DirectoryFds(root) as dirs:
        dirs.fd("/kept/new/deeper")
        write_new_file(dirs, "/made/file", [b"x"], mode=0o644)
        dirs.remove_created()
    assert sorted(os.listdir(root)) == ["kept", "made"]
    assert os.listdir(root / "kept") == []


def test_chmod_nofollow_refuses_a_symlink(root: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"")
    victim.chmod(0o600)
    os.symlink(victim, root / "link")
    (root / "file").write_bytes(b"")
    with DirectoryFds(root) as dirs:
        with pytest.raises(OSError) as caught:  # noqa: PT011 - the errno is checked below
            chmod_nofollow(dirs.fd(""), "link", 0o777)
        assert caught.value.errno == errno.ELOOP
        chmod_nofollow(dirs.fd(""), "file", 0o4755)
    assert stat.S_IMODE(victim.stat().st_mode) == 0o600
    assert stat.S_IMODE((root / "file").stat().st_mode) == 0o755
