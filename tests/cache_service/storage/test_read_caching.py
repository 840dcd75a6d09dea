"""ReadCachingBlobStore: bounded LRU disk cache in front of a slow store (SVC-001)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

import pytest

from cache_service.storage.base import BlobInfo, BlobRef, StorageError, StoredChunk
from cache_service.storage.disk import DiskBlobStore
from cache_service.storage.memory import MemoryBlobStore
from cache_service.storage.read_caching import ReadCachingBlobStore
from tests.cache_service.storage.conftest import Blob, make_blob


class _CountingSlow:
    """A hand-written fake slow store: memory, counting reads, optionally failing writes."""

    def __init__(self) -> None:
        self.inner = MemoryBlobStore()
        self.reads = 0
        self.missing_calls: list[list[BlobRef]] = []
        self.fail_writes = False

    def missing(self, refs: Sequence[BlobRef]) -> list[BlobRef]:
        self.missing_calls.append(list(refs))
        return self.inner.missing(refs)

    def open_read(self, ref: BlobRef) -> BinaryIO | None:
        self.reads += 1
        return self.inner.open_read(ref)

    def write(self, ref: BlobRef, stored: Iterable[StoredChunk]) -> None:
        if self.fail_writes:
            for _ in stored:
                pass
            raise StorageError("slow store is down")
        self.inner.write(ref, stored)

    def delete(self, ref: BlobRef) -> None:
        self.inner.delete(ref)

    def iterate(self) -> Iterator[BlobInfo]:
        return self.inner.iterate()


def _blob(n: int) -> Blob:
    return make_blob(os.urandom(n))  # incompressible: stored size ≈ n


def _read(store: ReadCachingBlobStore, ref: BlobRef) -> bytes | None:
    reader = store.open_read(ref)
    if reader is None:
        return None
    with reader:
        return reader.read()


def test_reads_fill_the_cache_and_later_reads_skip_the_slow_store(tmp_path: Path) -> None:
    """SVC-001: a miss fills the fast store; the next read does not touch the slow store."""
    slow = _CountingSlow()
    blob = _blob(1000)
    slow.inner.write(blob.ref, [blob.stored])
    store = ReadCachingBlobStore(slow=slow, fast=DiskBlobStore(tmp_path), max_bytes=1 << 20)
    assert _read(store, blob.ref) == blob.stored
    assert _read(store, blob.ref) == blob.stored
    assert slow.reads == 1
    assert store.missing([blob.ref]) == []
    assert slow.missing_calls == []  # answered from the cache


def test_eviction_keeps_the_cache_under_its_bound_lru_first(tmp_path: Path) -> None:
    """SVC-001: the least recently used blob goes first; the total stays under max_bytes."""
    slow = _CountingSlow()
    blobs = [_blob(4000) for _ in range(3)]
    for blob in blobs:
        slow.inner.write(blob.ref, [blob.stored])
    fast = DiskBlobStore(tmp_path)
    bound = sum(len(b.stored) for b in blobs[:2]) + 100
    store = ReadCachingBlobStore(slow=slow, fast=fast, max_bytes=bound)
    _read(store, blobs[0].ref)
    _read(store, blobs[1].ref)
    _read(store, blobs[0].ref)  # blobs[1] is now the least recently used
    _read(store, blobs[2].ref)
    assert fast.missing([b.ref for b in blobs]) == [blobs[1].ref]
    assert store.cached_bytes <= bound
    assert sum(info.stored_bytes for info in fast.iterate()) <= bound


def test_restart_scans_the_cache_directory(tmp_path: Path) -> None:
    """SVC-001: a new process sees what is cached (and enforces a smaller bound at once)."""
    slow = _CountingSlow()
    blobs = [_blob(3000) for _ in range(3)]
    first = ReadCachingBlobStore(slow=slow, fast=DiskBlobStore(tmp_path), max_bytes=1 << 20)
    for blob in blobs:
        first.write(blob.ref, [blob.stored])
    total = sum(len(b.stored) for b in blobs)
    again = ReadCachingBlobStore(slow=slow, fast=DiskBlobStore(tmp_path), max_bytes=1 << 20)
    assert again.cached_bytes == total
    smaller = ReadCachingBlobStore(slow=slow, fast=DiskBlobStore(tmp_path), max_bytes=total - 1000)
    assert smaller.cached_bytes <= total - 1000
    assert len(list(DiskBlobStore(tmp_path).iterate())) == 2


def test_a_write_the_slow_store_refuses_leaves_nothing_cached(tmp_path: Path) -> None:
    """§6: the cache never claims a blob the authoritative store does not hold."""
    slow = _CountingSlow()
    slow.fail_writes = True
    fast = DiskBlobStore(tmp_path)
    store = ReadCachingBlobStore(slow=slow, fast=fast, max_bytes=1 << 20)
    blob = _blob(500)
    with pytest.raises(StorageError, match="slow store is down"):
        store.write(blob.ref, [blob.stored])
    assert fast.missing([blob.ref]) == [blob.ref]
    assert store.missing([blob.ref]) == [blob.ref]
    assert store.cached_bytes == 0


def test_a_blob_larger_than_the_cache_is_still_served(tmp_path: Path) -> None:
    """SVC-001: a blob that cannot fit is read from the slow store and not kept."""
    slow = _CountingSlow()
    blob = _blob(5000)
    slow.inner.write(blob.ref, [blob.stored])
    fast = DiskBlobStore(tmp_path)
    store = ReadCachingBlobStore(slow=slow, fast=fast, max_bytes=1000)
    assert _read(store, blob.ref) == blob.stored
    assert store.cached_bytes == 0
    assert fast.missing([blob.ref]) == [blob.ref]


def test_delete_removes_from_both_tiers(tmp_path: Path) -> None:
    """RC-004: a corrupt blob deleted by the server is gone from cache and slow store."""
    slow = _CountingSlow()
    fast = DiskBlobStore(tmp_path)
    store = ReadCachingBlobStore(slow=slow, fast=fast, max_bytes=1 << 20)
    blob = _blob(500)
    store.write(blob.ref, [blob.stored])
    store.delete(blob.ref)
    assert fast.missing([blob.ref]) == [blob.ref]
    assert slow.inner.missing([blob.ref]) == [blob.ref]
    assert store.cached_bytes == 0
