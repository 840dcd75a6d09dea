"""File-system leaves: the embedded default store of ``haz-cache-service`` (``file://DIR``).

Spec coverage:
* SVC-001 — :class:`DiskBlobStore` and :class:`DiskManifestStore` implement the storage ports
  on a local directory; several server processes may share it.
* SVC-002 — files live at ``<root>/v1/cas/<hash>/<aa>/<hexdigest>-<size>`` and
  ``<root>/v1/ns/<namespace>/ac/<hash>/<aa>/<hexkey>`` (:mod:`._layout`).
* RC-004/RC-005, §6 "nothing partial is ever visible" — every write goes to a temp file in the
  destination directory and is published with one atomic ``os.replace``; a write whose chunk
  iterator raises (verification failure, client gone) removes its temp file and publishes
  nothing. ``put_if_absent`` publishes with ``os.link`` of the finished temp file, which fails
  atomically when the name exists — race-free across threads, processes and replicas on the
  same file system. A blob's chunks (views as they arrived, 3-byte block headers) are
  gathered into ``writev`` calls of about 1 MiB, written where they lie; a blob of several
  such writes is written by a thread of its own while the next chunks are verified; with
  ``fsync``, it is flushed to disk in the background while it is written (one
  ``fdatasync`` at a time), so the final fsync only waits for the tail. A blob of 8 MiB or
  more has its space reserved with ``fallocate`` ahead of its writes, at most
  :data:`_RESERVE_STEP` beyond what arrived and never beyond its uncompressed size, and is
  cut to what was written at the end (a compressed frame is smaller).
* Issue 13 — so an upload that declares a large size and sends little holds little disk:
  at most what it sent plus one reservation step.
* Issue 13 — temp files orphaned by a crash (``.tmp-*``, never listed) are removed by
  :func:`remove_stale_temp_files` once older than a grace period: a write in flight touches
  its file with every chunk it writes and never waits for a client longer than the stream
  idle timeout, so a temp file untouched for the grace period (default 1 h) has no writer.
  ``gc`` and the service's start-up call it.
Out of scope: size bounds and eviction (gc, or :mod:`.read_caching` for a cache directory).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import queue
import sys
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal, cast

from cache_service.storage._layout import (
    CAS_PREFIX,
    NS_PREFIX,
    blob_name,
    check_namespace,
    manifest_name,
    parse_blob_name,
    parse_manifest_name,
)
from cache_service.storage.base import (
    WOULD_BLOCK,
    BlobInfo,
    BlobRef,
    ManifestInfo,
    StorageError,
    StoredChunk,
    WouldBlock,
)
from hazremote.domain.digest import Digest
from hazremote.domain.model import HashName
from hazremote.fileio import fsync_dir, write_all

__all__ = ["DiskBlobStore", "DiskManifestStore", "TempSweep", "remove_stale_temp_files"]

_TEMP_PREFIX = ".tmp-"
#: ``preadv`` flag: read only what the page cache holds, never wait for the disk (Linux ≥ 4.14).
_RWF_NOWAIT: int | None = getattr(os, "RWF_NOWAIT", None)
#: A larger document is left to the thread pool even when cached (copying it on the event
#: loop would stall other RPCs).
_NOWAIT_MAX_BYTES = 256 * 1024
#: ``preadv(RWF_NOWAIT)`` refusals meaning "this file system cannot tell": use the pool.
_NOWAIT_UNSUPPORTED = frozenset({errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS})
#: Background flushing of a blob being written starts after every this many bytes.
_WRITEBACK_STEP = 16 << 20
#: Chunks of a blob queued for its writing thread (memory: this many gathered writes).
_WRITE_AHEAD = 4
#: Chunks of a blob are gathered into one ``writev`` of at least this many bytes ...
_GATHER_BYTES = 1 << 20
#: ... or this many chunks (well under any IOV_MAX; Linux's is 1024).
_GATHER_MAX = 256
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_fdatasync = getattr(os, "fdatasync", os.fsync)  # no fdatasync on macOS
#: A blob at least this large gets its space reserved ahead of its writes (:func:`_reserve`).
_RESERVE_MIN_BYTES = 8 << 20
#: ... at most this far beyond the bytes that arrived (issue 13: a declared size is a claim).
_RESERVE_STEP = 16 << 20


def _libc_fallocate() -> Callable[[int, int, int, int], int] | None:
    """Linux's ``fallocate(2)``, or None. Not ``os.posix_fallocate``: where the file system
    cannot allocate, glibc emulates it by writing a byte into every block."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    # fallocate64 takes a 64-bit off_t everywhere; plain fallocate only where off_t is the
    # native long (musl has no *64 names).
    names = ["fallocate64"] + (["fallocate"] if ctypes.sizeof(ctypes.c_long) == 8 else [])
    function = next((getattr(libc, n) for n in names if hasattr(libc, n)), None)
    if function is None:
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
    function.restype = ctypes.c_int
    return cast(Callable[[int, int, int, int], int], function)


_fallocate = _libc_fallocate()


def _reserve(fd: int, start: int, end: int) -> bool:
    """Allocate bytes ``start`` to ``end`` of ``fd`` in one call; False when the file system
    cannot (then the writes allocate as usual). ext4 then writes into allocated extents
    instead of reserving delayed allocation page by page: about a third of the CPU of
    writing a large blob (issue 5). The file's size becomes at least ``end``: the writer
    truncates it to what it wrote."""
    return _fallocate is not None and _fallocate(fd, 0, start, end - start) == 0


def _write_temp(directory: Path, chunks: Iterable[bytes], *, fsync: bool, what: str) -> Path:
    """Write ``chunks`` to a fresh temp file in ``directory``; on any error remove it.

    An exception raised by ``chunks`` itself (verification failed, client gone) propagates
    unchanged; our own I/O failures become :class:`StorageError` prefixed with ``what``.
    """
    temp = directory / f"{_TEMP_PREFIX}{uuid.uuid4().hex}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        out = open(temp, "xb")  # noqa: SIM115 - closed below, after the cleanup guard is set
    except OSError as exc:
        raise StorageError(f"{what}: {exc}") from exc
    try:
        with out:
            for chunk in chunks:
                try:
                    out.write(chunk)
                except OSError as exc:
                    raise StorageError(f"{what}: {exc}") from exc
            if fsync:
                try:
                    out.flush()
                    os.fsync(out.fileno())
                except OSError as exc:
                    raise StorageError(f"{what}: {exc}") from exc
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    return temp


def _writev_all(fd: int, chunks: list[StoredChunk], count: int) -> None:
    """Write every byte of ``chunks`` (``count`` in all) to ``fd`` in as few ``writev`` calls
    as the kernel allows (it may write less than asked)."""
    while True:
        done = os.writev(fd, chunks)
        count -= done
        if count <= 0:
            return
        first = 0
        while done >= len(chunks[first]):
            done -= len(chunks[first])
            first += 1
        chunks = [memoryview(chunks[first])[done:], *chunks[first + 1 :]]


def _gathered(chunks: Iterable[StoredChunk]) -> Iterator[tuple[list[StoredChunk], int]]:
    """``chunks`` in groups of at least :data:`_GATHER_BYTES` (the last may be smaller) or
    :data:`_GATHER_MAX` chunks, with their byte counts; empty chunks are left out. A raw-block
    frame comes as 3-byte block headers between 128 KiB views of the received data: written
    together, they cost one system call and no copy (issue 5)."""
    group: list[StoredChunk] = []
    count = 0
    for chunk in chunks:
        size = len(chunk)
        if not size:
            continue
        group.append(chunk)
        count += size
        if count >= _GATHER_BYTES or len(group) >= _GATHER_MAX:
            yield group, count
            group, count = [], 0
    if group:
        yield group, count


class _Flusher:
    """Flushes a file being written to disk in the background, one ``fdatasync`` at a time,
    so the disk writes while more bytes arrive and the final fsync only waits for the tail
    (for a large blob, one fsync at the end cost about half the time of the whole write)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._pending = 0
        self._thread: threading.Thread | None = None
        self._error: OSError | None = None

    def wrote(self, count: int) -> None:
        self._pending += count
        if self._pending < _WRITEBACK_STEP or (
            self._thread is not None and self._thread.is_alive()
        ):
            return
        self._pending = 0
        self._thread = threading.Thread(target=self._sync, name="haz-blob-flush", daemon=True)
        self._thread.start()

    def _sync(self) -> None:
        try:
            _fdatasync(self._fd)
        except OSError as exc:
            self._error = exc

    def join(self) -> None:
        """Wait for a flush in progress (before the file is closed); raise its error."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            raise self._error


class _BlobFile:
    """Writes a blob's gathered chunks to ``fd`` (:func:`_gathered`): the first group in the
    calling thread, the rest (a blob of several groups) in a writing thread of the blob's own,
    up to :data:`_WRITE_AHEAD` groups behind the caller, so the disk write of one group
    overlaps the verification of the next (the write is a third of a large upload's storage
    work, issue 5). With ``fsync``, the file is flushed in the background as bytes accumulate
    (:class:`_Flusher`). The chunks are written where they lie, so they must not change until
    :meth:`finish` or :meth:`abandon` returns (the :class:`BlobStore` contract). A file whose
    space was reserved (:func:`_reserve`) is cut to the bytes written when they are fewer.

    A blob declaring at least :data:`_RESERVE_MIN_BYTES` has its space reserved ahead of
    the writes, :data:`_RESERVE_STEP` at a time and never beyond ``size``."""

    def __init__(self, fd: int, *, fsync: bool, size: int) -> None:
        self._fd = fd
        # Reserve up to here (0: never, e.g. after the file system refused).
        self._reserve_to = size if size >= _RESERVE_MIN_BYTES and _fallocate else 0
        self._reserved = 0  # the file's allocated extent, from 0
        self._written = 0
        self._flusher = _Flusher(fd) if fsync else None
        self._first = True
        self._queue: queue.SimpleQueue[tuple[list[StoredChunk], int] | None] = queue.SimpleQueue()
        self._room = threading.Semaphore(_WRITE_AHEAD)
        self._thread: threading.Thread | None = None
        self._error: Exception | None = None  # what a write in the writing thread raised

    def write(self, chunks: list[StoredChunk], count: int) -> None:
        """Write ``chunks`` (``count`` bytes, not none) after the ones before them.

        Raises:
            OSError: this write, or an earlier one in the writing thread, failed.
        """
        if self._error is not None:
            raise self._error
        self._written += count
        if self._written > self._reserved and self._reserve_to:
            self._reserve_ahead()
        if self._first:
            self._first = False
            self._write(chunks, count)
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="haz-blob-write", daemon=True)
            self._thread.start()
        self._room.acquire()
        self._queue.put((chunks, count))

    def _reserve_ahead(self) -> None:
        end = min(self._reserve_to, self._written + _RESERVE_STEP)
        if end <= self._reserved:  # a frame larger than the blob's size: past the reservation
            return
        if _reserve(self._fd, self._reserved, end):
            self._reserved = end
        else:
            self._reserve_to = 0

    def _write(self, chunks: list[StoredChunk], count: int) -> None:
        if len(chunks) == 1:
            write_all(self._fd, chunks[0])
        else:
            _writev_all(self._fd, chunks, count)
        if self._flusher is not None:
            self._flusher.wrote(count)

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            try:
                if self._error is None:  # after a failure, only take chunks (never block put)
                    self._write(*item)
            except Exception as exc:  # raised in the caller's thread at its next call
                self._error = exc
            finally:
                self._room.release()

    def _stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def finish(self) -> None:
        """Wait for every write, then (with ``fsync``) for the file to be on disk.

        Raises:
            OSError: a write or the flush failed.
        """
        self._stop()
        if self._error is not None:
            raise self._error
        if self._reserved > self._written:
            os.ftruncate(self._fd, self._written)
        if self._flusher is not None:
            self._flusher.join()
            os.fsync(self._fd)

    def abandon(self) -> None:
        """Stop writing, ignoring failures; the file may be closed afterwards."""
        self._stop()
        if self._flusher is not None:
            with contextlib.suppress(OSError):
                self._flusher.join()  # never close the file under a running flush


def _write_blob_temp(
    directory: Path, chunks: Iterable[StoredChunk], *, fsync: bool, what: str, size: int
) -> Path:
    """:func:`_write_temp` for blobs, which may be large: unbuffered (gathered) writes of the
    chunks as they come, overlapping the production of the next (:class:`_BlobFile`), into a
    file whose space is reserved ahead of them up to ``size`` (the blob's uncompressed size:
    its stored frame is a little larger when incompressible, smaller otherwise)."""
    temp = directory / f"{_TEMP_PREFIX}{uuid.uuid4().hex}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC, 0o666)
    except OSError as exc:
        raise StorageError(f"{what}: {exc}") from exc
    out = _BlobFile(fd, fsync=fsync, size=size)
    try:
        for group, count in _gathered(chunks):
            try:
                out.write(group, count)
            except OSError as exc:
                raise StorageError(f"{what}: {exc}") from exc
        try:
            out.finish()
        except OSError as exc:
            raise StorageError(f"{what}: {exc}") from exc
    except BaseException:
        out.abandon()
        os.close(fd)
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    try:
        os.close(fd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise StorageError(f"{what}: {exc}") from exc
    return temp


def _publish(temp: Path, path: Path, *, fsync: bool, what: str) -> None:
    """Atomically move a finished temp file to ``path`` (replacing what is there)."""
    try:
        os.replace(temp, path)
        if fsync:
            fsync_dir(path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise StorageError(f"{what}: {exc}") from exc


def _walk_files(top: Path, depth: int) -> Iterator[tuple[Path, os.stat_result]]:
    """Regular files exactly ``depth`` directory levels below ``top`` (missing dirs: none)."""
    try:
        entries = list(os.scandir(top))
    except (FileNotFoundError, NotADirectoryError):
        return
    for entry in entries:
        if entry.name.startswith(_TEMP_PREFIX):
            continue
        if depth == 0:
            try:
                if entry.is_file(follow_symlinks=False):
                    yield Path(entry.path), entry.stat(follow_symlinks=False)
            except FileNotFoundError:  # deleted while we walked
                continue
        elif entry.is_dir(follow_symlinks=False):
            yield from _walk_files(Path(entry.path), depth - 1)


@dataclass(frozen=True, slots=True, kw_only=True)
class TempSweep:
    """What :func:`remove_stale_temp_files` removed (or would remove, in a dry run)."""

    files: int = 0
    bytes: int = 0


def _stale_temps(top: Path, cutoff: float) -> Iterator[tuple[Path, os.stat_result]]:
    """``.tmp-*`` regular files anywhere below ``top`` last modified before ``cutoff``."""
    try:
        entries = list(os.scandir(top))
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError:
        return  # unreadable: nothing of ours to clean there
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                yield from _stale_temps(Path(entry.path), cutoff)
            elif entry.name.startswith(_TEMP_PREFIX) and entry.is_file(follow_symlinks=False):
                info = entry.stat(follow_symlinks=False)
                if info.st_mtime < cutoff:
                    yield Path(entry.path), info
        except FileNotFoundError:  # published or removed while we walked
            continue


def remove_stale_temp_files(
    root: Path, *, older_than: float, now: float, dry_run: bool = False
) -> TempSweep:
    """Remove the temp files of writes that died (SIGKILL, power loss) under a disk store.

    Only the store's own trees (``v1/cas`` and ``v1/ns``) are walked, and only files named
    like this module's temp files, last modified at least ``older_than`` seconds before
    ``now``: an in-flight write modifies its temp file with every chunk and gives up on a
    silent client long before any sensible grace period.

    Args:
        root: The store's directory (as given to :class:`DiskBlobStore`).
        older_than: The grace period in seconds.
        now: The current time (seconds since the epoch).
        dry_run: Count only.
    """
    files = size = 0
    cutoff = now - older_than
    for prefix in (CAS_PREFIX, NS_PREFIX):
        for path, info in _stale_temps(Path(root) / prefix, cutoff):
            if not dry_run:
                try:
                    path.unlink()
                except OSError:
                    continue  # gone meanwhile, or not ours to remove
            files += 1
            size += info.st_size
    return TempSweep(files=files, bytes=size)


class DiskBlobStore:
    """Blobs as files under ``root`` (SVC-002 layout), published atomically.

    Args:
        root: the store's directory (created on demand).
        fsync: fsync each file and its directory before a write returns. Off by default:
            a torn file after a power loss is caught by verification on read (RC-004) and
            becomes a miss, while per-file fsync costs ~4x in throughput on small blobs.
    """

    def __init__(self, root: Path, *, fsync: bool = False) -> None:
        self._root = Path(root)
        self._fsync = fsync

    @property
    def root(self) -> Path:
        return self._root

    def _path(self, ref: BlobRef) -> Path:
        return self._root / blob_name(ref)

    def missing(self, refs: Sequence[BlobRef]) -> list[BlobRef]:
        try:
            return [ref for ref in refs if not self._path(ref).is_file()]
        except OSError as exc:
            raise StorageError(f"cannot check blobs under {self._root}: {exc}") from exc

    def open_read(self, ref: BlobRef) -> BinaryIO | None:
        path = self._path(ref)
        try:
            return open(path, "rb")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"cannot read blob {path}: {exc}") from exc

    def write(self, ref: BlobRef, stored: Iterable[StoredChunk]) -> None:
        path = self._path(ref)
        what = f"cannot write blob {path}"
        temp = _write_blob_temp(path.parent, stored, fsync=self._fsync, what=what, size=ref.size)
        # Content-addressed: replacing an existing blob changes nothing a reader can observe
        # (a reader holding the old file keeps reading it), and repairs a blob that had been
        # found corrupt.
        _publish(temp, path, fsync=self._fsync, what=what)

    def delete(self, ref: BlobRef) -> None:
        path = self._path(ref)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StorageError(f"cannot delete blob {path}: {exc}") from exc

    def iterate(self) -> Iterator[BlobInfo]:
        top = self._root / CAS_PREFIX
        for path, st in _walk_files(top, depth=2):
            ref = parse_blob_name(path.relative_to(self._root).as_posix())
            if ref is not None:
                yield BlobInfo(ref=ref, stored_bytes=st.st_size, modified_unix=st.st_mtime)


class DiskManifestStore:
    """Manifest documents as files under ``root`` (SVC-002 layout).

    Args:
        root: the store's directory (created on demand; may be the blob store's root).
        fsync: fsync each document and its directory before a put returns.
    """

    def __init__(self, root: Path, *, fsync: bool = False) -> None:
        self._root = Path(root)
        self._fsync = fsync
        self._root_prefix = f"{self._root}{os.sep}"

    def _path(self, namespace: str, hash_name: HashName, key: Digest) -> Path:
        return self._root / manifest_name(namespace, hash_name, key)

    def get_nowait(
        self, namespace: str, hash_name: HashName, key: Digest
    ) -> bytes | Literal[WouldBlock.WOULD_BLOCK] | None:
        """The document when the page cache holds all of it (``preadv`` with
        ``RWF_NOWAIT``), None when absent, else :data:`WOULD_BLOCK`.

        Resolving the name may still touch the disk when its directories are not cached
        (rare for a directory that is read at all); the document's bytes never do.
        """
        if _RWF_NOWAIT is None:
            return WOULD_BLOCK
        path = self._root_prefix + manifest_name(namespace, hash_name, key)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"cannot read manifest {path}: {exc}") from exc
        try:
            size = os.fstat(fd).st_size
            if size > _NOWAIT_MAX_BYTES:
                return WOULD_BLOCK
            buffer = bytearray(size)
            if size and os.preadv(fd, [buffer], 0, _RWF_NOWAIT) != size:
                return WOULD_BLOCK  # partly cached, or changed under us: read it properly
            return bytes(buffer)
        except BlockingIOError:
            return WOULD_BLOCK
        except OSError as exc:
            if exc.errno in _NOWAIT_UNSUPPORTED:
                return WOULD_BLOCK
            raise StorageError(f"cannot read manifest {path}: {exc}") from exc
        finally:
            os.close(fd)

    def get(self, namespace: str, hash_name: HashName, key: Digest) -> bytes | None:
        path = self._path(namespace, hash_name, key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"cannot read manifest {path}: {exc}") from exc

    def put_if_absent(
        self, namespace: str, hash_name: HashName, key: Digest, document: bytes
    ) -> bool:
        path = self._path(namespace, hash_name, key)
        what = f"cannot write manifest {path}"
        temp = _write_temp(path.parent, [document], fsync=self._fsync, what=what)
        try:
            # link() fails atomically when the name exists: exactly one racer wins, and the
            # winner's document is complete the moment it becomes visible.
            os.link(temp, path)
            if self._fsync:
                fsync_dir(path.parent)
        except FileExistsError:
            return False
        except OSError as exc:
            raise StorageError(f"{what}: {exc}") from exc
        finally:
            with contextlib.suppress(OSError):
                temp.unlink()
        return True

    def replace(self, namespace: str, hash_name: HashName, key: Digest, document: bytes) -> None:
        path = self._path(namespace, hash_name, key)
        what = f"cannot write manifest {path}"
        temp = _write_temp(path.parent, [document], fsync=self._fsync, what=what)
        _publish(temp, path, fsync=self._fsync, what=what)

    def delete(self, namespace: str, hash_name: HashName, key: Digest) -> None:
        path = self._path(namespace, hash_name, key)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StorageError(f"cannot delete manifest {path}: {exc}") from exc

    def iterate(self, namespace: str | None = None) -> Iterator[ManifestInfo]:
        if namespace is None:
            top, depth = self._root / NS_PREFIX, 4
        else:
            check_namespace(namespace)
            top, depth = self._root / NS_PREFIX / namespace, 3
        for path, st in _walk_files(top, depth=depth):
            parsed = parse_manifest_name(path.relative_to(self._root).as_posix())
            if parsed is None:
                continue
            yield ManifestInfo(
                namespace=parsed.namespace,
                hash_name=parsed.hash_name,
                key=parsed.key,
                stored_bytes=st.st_size,
                modified_unix=st.st_mtime,
            )
