"""Large blob writes of the disk leaf: flushed to disk in the background while they stream
(fsync on), and still all-or-nothing (§6, RC-004)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from cache_service.storage import disk
from cache_service.storage.base import BlobVerificationError, StorageError
from cache_service.storage.disk import DiskBlobStore
from cache_service.storage.verifying import VerifyingBlobStore
from tests.cache_service.storage.conftest import disk_names, large_random_blob

MIB = 1 << 20


@pytest.fixture(autouse=True)
def small_flush_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """Flush every 256 KiB, so a few MiB exercise many background flushes."""
    monkeypatch.setattr(disk, "_WRITEBACK_STEP", 256 << 10)


def _chunks(stored: bytes, size: int = 100_000) -> Iterator[bytes]:
    for start in range(0, len(stored), size):
        yield stored[start : start + size]


def test_fsync_write_of_a_large_blob_is_published_whole(tmp_path: Path) -> None:
    """With fsync on, a multi-MiB blob written in many chunks (flushed in the background as
    it goes) is published under its name, byte for byte, and no temp file is left."""
    ref, stored = large_random_blob(mib=3, seed=5)
    store = VerifyingBlobStore(inner=DiskBlobStore(tmp_path, fsync=True))
    store.write(ref, _chunks(stored))
    hexd = ref.digest.hex
    assert disk_names(tmp_path) == {f"v1/cas/blake3/{hexd[:2]}/{hexd}-{ref.size}"}
    reader = store.open_read(ref)
    assert reader is not None
    with reader:
        assert reader.read() == stored


@pytest.mark.parametrize("fsync", [True, False])
def test_source_failing_after_flushes_leaves_nothing(tmp_path: Path, fsync: bool) -> None:
    """A source that fails after several MiB (the client went away) publishes nothing and
    removes its temp file, also while a background flush may be running."""
    ref, stored = large_random_blob(mib=3, seed=6)

    def failing() -> Iterator[bytes]:
        yield from _chunks(stored[: 2 * MIB])
        raise ConnectionResetError("client gone")

    with pytest.raises(ConnectionResetError):
        DiskBlobStore(tmp_path, fsync=fsync).write(ref, failing())
    assert disk_names(tmp_path) == set()


def test_verification_failure_at_the_end_leaves_nothing(tmp_path: Path) -> None:
    """RC-004: bytes that turn out wrong only at the end (after background flushes) are never
    published."""
    ref, stored = large_random_blob(mib=3, seed=7)
    wrong = bytearray(stored)
    wrong[-10] ^= 0xFF
    store = VerifyingBlobStore(inner=DiskBlobStore(tmp_path, fsync=True))
    with pytest.raises(BlobVerificationError):
        store.write(ref, _chunks(bytes(wrong)))
    assert disk_names(tmp_path) == set()


def test_failed_background_flush_fails_the_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A background flush that fails (disk error) is a StorageError, not a published blob: the
    final fsync alone might not report an error the flush already consumed."""
    ref, stored = large_random_blob(mib=2, seed=8)
    calls: list[int] = []

    def broken_fdatasync(fd: int) -> None:
        calls.append(fd)
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(disk, "_fdatasync", broken_fdatasync)
    with pytest.raises(StorageError, match="Input/output error"):
        DiskBlobStore(tmp_path, fsync=True).write(ref, _chunks(stored))
    assert calls
    assert disk_names(tmp_path) == set()


def test_no_background_flush_without_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """fsync off (the default): nothing is flushed, the blob is still published whole."""
    ref, stored = large_random_blob(mib=2, seed=9)

    def unexpected(fd: int) -> None:
        raise AssertionError("flushed with fsync off")

    monkeypatch.setattr(disk, "_fdatasync", unexpected)
    DiskBlobStore(tmp_path).write(ref, _chunks(stored))
    hexd = ref.digest.hex
    path = tmp_path / f"v1/cas/blake3/{hexd[:2]}/{hexd}-{ref.size}"
    assert path.read_bytes() == stored
    assert os.stat(path).st_size == len(stored)
