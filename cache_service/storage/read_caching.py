"""ReadCachingBlobStore: a bounded LRU disk cache in front of a slow store (S3).

Spec coverage:
* SVC-001 — ``--read-cache DIR --read-cache-size SIZE``: hits from disk, misses copied in, LRU.
* RC-004 — writes go to the fast store, then the slow one; a failed copy drops the fast copy.
Out of scope: sharing one cache directory between processes (each tracks its own sizes).
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from typing import BinaryIO

from cache_service.storage.base import BlobInfo, BlobRef, BlobStore, StorageError, StoredChunk

__all__ = ["ReadCachingBlobStore"]

_COPY_CHUNK = 1024 * 1024


def _chunks(reader: BinaryIO) -> Iterator[bytes]:
    with reader:
        while chunk := reader.read(_COPY_CHUNK):
            yield chunk


class ReadCachingBlobStore:
    """Decorator: ``fast`` caches ``slow``'s blobs, bounded to ``max_bytes`` stored bytes.

    Args:
        slow: the authoritative store (S3).
        fast: the cache (a :class:`~cache_service.storage.disk.DiskBlobStore` on local disk);
            nothing else should write to it.
        max_bytes: bound on the stored bytes the fast store holds.
    """

    def __init__(self, *, slow: BlobStore, fast: BlobStore, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError(f"the read cache size must be positive, got {max_bytes}")
        self._slow = slow
        self._fast = fast
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        self._lru: OrderedDict[BlobRef, int] = OrderedDict()
        self._total = 0
        for info in sorted(fast.iterate(), key=lambda info: info.modified_unix):
            self._lru[info.ref] = info.stored_bytes
            self._total += info.stored_bytes
        self._evict()

    @property
    def cached_bytes(self) -> int:
        """Stored bytes currently held by the fast store (as tracked)."""
        with self._lock:
            return self._total

    def missing(self, refs: Sequence[BlobRef]) -> list[BlobRef]:
        with self._lock:
            unknown = [ref for ref in refs if ref not in self._lru]
        if not unknown:
            return []
        return self._slow.missing(unknown)

    def open_read(self, ref: BlobRef) -> BinaryIO | None:
        with self._lock:
            cached = ref in self._lru
            if cached:
                self._lru.move_to_end(ref)
        if cached:
            reader = self._fast.open_read(ref)
            if reader is not None:
                return reader
            self._forget(ref)  # removed behind our back: refill below
        reader = self._slow.open_read(ref)
        if reader is None:
            return None
        try:
            self._fast.write(ref, _chunks(reader))
        except StorageError:
            # The cache is an accelerator: a full or broken cache disk must not fail reads.
            return self._slow.open_read(ref)
        self._admit(ref)
        fresh = self._fast.open_read(ref)
        return fresh if fresh is not None else self._slow.open_read(ref)

    def write(self, ref: BlobRef, stored: Iterable[StoredChunk]) -> None:
        self._fast.write(ref, stored)
        reader = self._fast.open_read(ref)
        if reader is None:
            raise StorageError(f"read cache lost blob {ref.digest} while writing it")
        try:
            self._slow.write(ref, _chunks(reader))
        except BaseException:
            with contextlib.suppress(StorageError):
                self._fast.delete(ref)
            self._forget(ref)
            raise
        self._admit(ref)

    def delete(self, ref: BlobRef) -> None:
        self._forget(ref)
        self._fast.delete(ref)
        self._slow.delete(ref)

    def iterate(self) -> Iterator[BlobInfo]:
        return self._slow.iterate()

    def _stored_size(self, ref: BlobRef) -> int:
        reader = self._fast.open_read(ref)
        if reader is None:
            return 0
        with reader:
            return reader.seek(0, 2)

    def _admit(self, ref: BlobRef) -> None:
        size = self._stored_size(ref)
        with self._lock:
            self._total -= self._lru.pop(ref, 0)
            self._lru[ref] = size
            self._total += size
        self._evict()

    def _forget(self, ref: BlobRef) -> None:
        with self._lock:
            self._total -= self._lru.pop(ref, 0)

    def _evict(self) -> None:
        victims: list[BlobRef] = []
        with self._lock:
            while self._total > self._max_bytes and self._lru:
                victim, size = self._lru.popitem(last=False)
                self._total -= size
                victims.append(victim)
        for victim in victims:
            # A reader holding the file open keeps reading it (POSIX unlink semantics).
            with contextlib.suppress(StorageError):
                self._fast.delete(victim)
