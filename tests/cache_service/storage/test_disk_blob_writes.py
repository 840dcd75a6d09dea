"""Large blob writes of the disk leaf: space reserved up front, flushed to disk in the
background while they stream (fsync on), and still all-or-nothing (§6, RC-004)."""

from __future__ import annotations

import errno
import itertools
import os
import random
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from cache_service.cas import _raw_frame
from cache_service.storage import disk
from cache_service.storage._layout import blob_name
from cache_service.storage.base import (
    BlobRef,
    BlobVerificationError,
    StorageError,
    StoredChunk,
)
from cache_service.storage.disk import DiskBlobStore
from cache_service.storage.verifying import VerifyingBlobStore, compress_chunks
from hazremote import fileio
from hazremote.domain.digest import digest_bytes
from hazremote.domain.model import HashName
from tests.cache_service.storage.conftest import disk_names, large_random_blob

MIB = 1 << 20


@pytest.fixture(autouse=True)
def small_flush_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """Flush every 256 KiB, gather writes of 200 kB and reserve the space of blobs from 1 MiB
    in steps of 1 MiB, so a few MiB exercise many background flushes, many gathered writes
    and several reservations."""
    monkeypatch.setattr(disk, "_WRITEBACK_STEP", 256 << 10)
    monkeypatch.setattr(disk, "_GATHER_BYTES", 200_000)
    monkeypatch.setattr(disk, "_RESERVE_MIN_BYTES", MIB)
    monkeypatch.setattr(disk, "_RESERVE_STEP", MIB)


def _blob_path(root: Path, ref: BlobRef) -> Path:
    return root / blob_name(ref)


def _recording_reservations(
    monkeypatch: pytest.MonkeyPatch, result: int = 0
) -> list[tuple[int, int]]:
    """Record the ranges (offset, length) reserved through ``fallocate``; ``result`` -1
    makes every reservation fail (a file system that cannot allocate ahead)."""
    real = disk._fallocate
    assert real is not None, "fallocate(2) is available on Linux"
    sizes: list[tuple[int, int]] = []

    def fallocate(fd: int, mode: int, offset: int, length: int) -> int:
        sizes.append((offset, length))
        return result if result else real(fd, mode, offset, length)

    monkeypatch.setattr(disk, "_fallocate", fallocate)
    return sizes


def test_compressed_blob_keeps_no_more_disk_than_its_frame(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large blob's space is reserved one step ahead of its writes; when its stored frame
    is much smaller (compressible output), the file is cut to the frame: the published file
    has the frame's size and the reserved blocks are given back."""
    sizes = _recording_reservations(monkeypatch)
    content = b"build output line, highly repetitive\n" * (16 * MIB // 37)
    ref = BlobRef(
        hash_name=HashName.BLAKE3, digest=digest_bytes(HashName.BLAKE3, content), size=len(content)
    )
    stored = b"".join(compress_chunks([content]))
    assert len(stored) < MIB // 4
    store = VerifyingBlobStore(inner=DiskBlobStore(tmp_path, fsync=True))
    store.write(ref, _chunks(stored, 10_000))
    path = _blob_path(tmp_path, ref)
    [(offset, length)] = sizes  # one step ahead of the first write covers the frame
    assert offset == 0
    assert length <= len(stored) + MIB
    assert path.read_bytes() == stored
    info = os.stat(path)
    assert info.st_size == len(stored)
    assert info.st_blocks * 512 < MIB, "the reserved step was not given back"
    reader = store.open_read(ref)
    assert reader is not None
    with reader:
        assert reader.read() == stored


def test_frame_larger_than_the_reservation_is_written_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An incompressible blob's frame (raw blocks) is a little larger than the uncompressed
    size reserved for it: the reservations stop at that size and the writes go on past it."""
    sizes = _recording_reservations(monkeypatch)
    ref, stored = large_random_blob(mib=3, seed=4)
    assert len(stored) > ref.size
    DiskBlobStore(tmp_path, fsync=True).write(ref, _chunks(stored))
    assert sizes[0][0] == 0
    assert all(a + n == b for (a, n), (b, _) in itertools.pairwise(sizes))
    assert sum(n for _, n in sizes) == ref.size
    assert _blob_path(tmp_path, ref).read_bytes() == stored


def test_file_system_that_cannot_reserve_still_stores_the_blob(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fallocate failing (EOPNOTSUPP on a file system without it) only means no reservation:
    the blob is written and published as without one."""
    sizes = _recording_reservations(monkeypatch, result=-1)
    ref, stored = large_random_blob(mib=2, seed=3)
    DiskBlobStore(tmp_path, fsync=True).write(ref, _chunks(stored))
    assert len(sizes) == 1  # tried once, then never again for this blob
    path = _blob_path(tmp_path, ref)
    assert path.read_bytes() == stored
    assert os.stat(path).st_size == len(stored)


def test_small_blobs_reserve_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Below the threshold a reservation would cost a system call for nothing."""
    sizes = _recording_reservations(monkeypatch)
    data = b"small" * 1000
    ref = BlobRef(
        hash_name=HashName.BLAKE3, digest=digest_bytes(HashName.BLAKE3, data), size=len(data)
    )
    DiskBlobStore(tmp_path, fsync=True).write(ref, [b"".join(compress_chunks([data]))])
    assert sizes == []
    assert _blob_path(tmp_path, ref).exists()


def test_declared_size_reserves_only_a_step_beyond_what_arrived(tmp_path: Path) -> None:
    """Issue 13 (3): an upload declaring 4 GiB that sent 3 MiB holds about 3 MiB plus one
    reservation step of disk, not 4 GiB; abandoned, it holds nothing."""
    declared = BlobRef(
        hash_name=HashName.BLAKE3, digest=digest_bytes(HashName.BLAKE3, b"x"), size=4 << 30
    )
    sent = 3 * MIB
    held: list[int] = []

    def trickle() -> Iterator[bytes]:
        for _ in range(sent // 100_000):
            yield os.urandom(100_000)
        temps = list(tmp_path.rglob(".tmp-*"))
        assert len(temps) == 1
        held.append(os.stat(temps[0]).st_blocks * 512)
        raise StorageError("the client went away")

    with pytest.raises(StorageError, match="went away"):
        DiskBlobStore(tmp_path).write(declared, trickle())
    assert held
    assert held[0] <= sent + MIB + MIB  # received, one step, one gathered write
    assert list(tmp_path.rglob(".tmp-*")) == []


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
    path = _blob_path(tmp_path, ref)
    assert path.read_bytes() == stored
    assert os.stat(path).st_size == len(stored)


def _recording_writes(monkeypatch: pytest.MonkeyPatch, fail_at: int | None = None) -> list[str]:
    """Record the thread of every (gathered) write of the disk leaf; the ``fail_at``-th (from
    0) fails as a full disk would."""
    threads: list[str] = []
    real, real_v = fileio.write_all, disk._writev_all

    def record() -> None:
        threads.append(threading.current_thread().name)
        if len(threads) - 1 == fail_at:
            raise OSError(errno.ENOSPC, "No space left on device")

    def write_all(fd: int, data: bytes | memoryview) -> None:
        record()
        real(fd, data)

    def writev_all(fd: int, chunks: list[StoredChunk], count: int) -> None:
        record()
        real_v(fd, chunks, count)

    monkeypatch.setattr(disk, "write_all", write_all)
    monkeypatch.setattr(disk, "_writev_all", writev_all)
    return threads


def _writing_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "haz-blob-write"]


def test_chunks_after_the_first_are_written_by_a_thread_of_the_blob(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 5: a blob of several chunks is written by a thread of its own (the disk write
    overlaps the verification of the next chunk); the result is the same file, and the
    thread is gone when the write returns. A one-chunk blob starts no thread."""
    threads = _recording_writes(monkeypatch)
    ref, stored = large_random_blob(mib=2, seed=10)
    VerifyingBlobStore(inner=DiskBlobStore(tmp_path, fsync=True)).write(ref, _chunks(stored))
    caller = threading.current_thread().name
    assert threads[0] == caller
    assert set(threads[1:]) == {"haz-blob-write"}
    assert len(threads) == len(list(disk._gathered(_chunks(stored))))
    assert _blob_path(tmp_path, ref).read_bytes() == stored
    assert not _writing_threads()

    threads.clear()
    small, small_stored = large_random_blob(mib=1, seed=11)
    DiskBlobStore(tmp_path / "single").write(small, [small_stored])
    assert threads == [caller]


def test_write_failing_in_the_writing_thread_fails_the_blob(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A disk error in the writing thread is the blob's StorageError (raised while the rest
    still streams, or at the end); nothing is published, no temp file or thread is left."""
    _recording_writes(monkeypatch, fail_at=3)
    ref, stored = large_random_blob(mib=3, seed=12)
    source = list(_chunks(stored))
    taken: list[int] = []

    def counted() -> Iterator[bytes]:
        for chunk in source:
            taken.append(len(chunk))
            yield chunk

    with pytest.raises(StorageError, match="No space left"):
        VerifyingBlobStore(inner=DiskBlobStore(tmp_path, fsync=True)).write(ref, counted())
    assert len(taken) < len(source)  # the caller stopped before the end
    assert not any((tmp_path / name).is_file() for name in disk_names(tmp_path))
    assert not _writing_threads()


def test_corruption_found_mid_stream_while_chunks_are_queued_leaves_nothing(
    tmp_path: Path,
) -> None:
    """RC-004: a frame found corrupt in its middle (a reserved block type), while earlier
    chunks may still wait for the writing thread, publishes nothing and leaves no thread."""
    data = random.Random(13).randbytes(3 * MIB)
    ref = BlobRef(
        hash_name=HashName.BLAKE3, digest=digest_bytes(HashName.BLAKE3, data), size=len(data)
    )
    wrong = bytearray(b"".join(_raw_frame(len(data), [data])))
    header = 10 + 12 * (3 + 128 * 1024)  # frame header, then 12 raw blocks of 128 KiB
    wrong[header] |= 0b110  # Block_Type 3: reserved
    chunks = list(_chunks(bytes(wrong), size=64 * 1024))
    taken: list[bytes] = []

    def source() -> Iterator[bytes]:
        for chunk in chunks:
            taken.append(chunk)
            yield chunk

    store = VerifyingBlobStore(inner=DiskBlobStore(tmp_path, fsync=True))
    with pytest.raises(BlobVerificationError, match="reserved block type"):
        store.write(ref, source())
    assert 1 < len(taken) < len(chunks)
    assert not any((tmp_path / name).is_file() for name in disk_names(tmp_path))
    assert not _writing_threads()


def test_raw_frame_pieces_are_written_where_they_lie(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 5: the stored form of an identity upload comes as block headers between views of
    the received chunks; the disk leaf gathers them into few ``writev`` calls of the very
    objects it was given (no joined copy), and the file is the frame."""
    data = random.Random(14).randbytes(3 * MIB + 5)
    ref = BlobRef(
        hash_name=HashName.BLAKE3, digest=digest_bytes(HashName.BLAKE3, data), size=len(data)
    )
    pieces = list(_raw_frame(len(data), [data[i : i + MIB] for i in range(0, len(data), MIB)]))
    written: list[StoredChunk] = []
    real_all, real_v = fileio.write_all, disk._writev_all

    def write_all(fd: int, data: bytes | memoryview) -> None:
        written.append(data)
        real_all(fd, data)

    def writev_all(fd: int, chunks: list[StoredChunk], count: int) -> None:
        written.extend(chunks)
        real_v(fd, chunks, count)

    monkeypatch.setattr(disk, "write_all", write_all)
    monkeypatch.setattr(disk, "_writev_all", writev_all)
    VerifyingBlobStore(inner=DiskBlobStore(tmp_path, fsync=True)).write(ref, iter(pieces))
    assert len(written) == len(pieces)
    assert all(got is given for got, given in zip(written, pieces, strict=True))
    assert sum(isinstance(piece, memoryview) for piece in pieces) == len(data) // (128 << 10) + 1
    stored = _blob_path(tmp_path, ref).read_bytes()
    assert stored == b"".join(pieces)


def test_short_gathered_writes_are_completed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``writev`` may write less than asked, ending inside any chunk: the rest follows."""
    real = os.writev
    calls: list[int] = []

    def short_writev(fd: int, buffers: list[bytes | memoryview]) -> int:
        room, taken = 70_001, []
        for buffer in buffers:
            view = memoryview(buffer)[:room]
            taken.append(view)
            room -= len(view)
            if not room:
                break
        calls.append(len(taken))
        return real(fd, taken)

    monkeypatch.setattr(os, "writev", short_writev)
    ref, stored = large_random_blob(mib=2, seed=15)
    pieces = [memoryview(stored)[i : i + 30_000] for i in range(0, len(stored), 30_000)]
    VerifyingBlobStore(inner=DiskBlobStore(tmp_path)).write(ref, pieces)
    assert len(calls) > len(stored) // 200_000  # gathered writes, each completed in parts
    assert _blob_path(tmp_path, ref).read_bytes() == stored
