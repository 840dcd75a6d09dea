"""ReadCachingManifestStore: found manifests kept in memory for a bounded time.

Spec coverage:
* SVC-001 — behind ``--read-cache``, found documents are served for ``ttl_s``; misses never.
* SEC-004 — a change made elsewhere is seen within ``ttl_s``; this process's own at once.
* SVC-006 — entries are bounded by bytes, least recently used first.
Out of scope: coherence between replicas beyond the TTL, and caching ``iterate``.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

from cache_service.storage.base import WOULD_BLOCK, ManifestInfo, ManifestStore, WouldBlock
from hazremote.domain.digest import Digest
from hazremote.domain.model import HashName

__all__ = ["ENTRY_OVERHEAD", "MANIFEST_CACHE_BYTES", "ReadCachingManifestStore"]

#: Default bound of the cached documents (a 10-output manifest is ~3 KiB: ~20,000 of them).
MANIFEST_CACHE_BYTES = 64 << 20
#: Bytes counted per entry beside its document (key, bookkeeping).
ENTRY_OVERHEAD = 256

_Key = tuple[str, HashName, Digest]


@dataclass(frozen=True, slots=True)
class _Entry:
    """A cached document, or a marker (``document`` None) left by this process's own delete
    or failed write, so a read that began before it cannot put the old document back."""

    document: bytes | None
    #: The :attr:`ReadCachingManifestStore._ticket` of the read or write that made it.
    ticket: int
    expires: float
    size: int


class ReadCachingManifestStore:
    """Decorator: ``inner``'s found documents served from memory for ``ttl_s`` seconds.

    Args:
        inner: the authoritative store (S3).
        ttl_s: longest time a document is served without asking ``inner`` again (> 0).
        max_bytes: bound of the cached documents plus :data:`ENTRY_OVERHEAD` per entry.
        clock: monotonic seconds (tests pass their own).
    """

    def __init__(
        self,
        *,
        inner: ManifestStore,
        ttl_s: float,
        max_bytes: int = MANIFEST_CACHE_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_s <= 0:
            raise ValueError(f"the manifest cache TTL must be positive, got {ttl_s}")
        if max_bytes <= 0:
            raise ValueError(f"the manifest cache size must be positive, got {max_bytes}")
        self._inner = inner
        self._ttl_s = ttl_s
        self._max_bytes = max_bytes
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[_Key, _Entry] = OrderedDict()
        self._total = 0
        # Orders reads and writes: an entry is only replaced by the result of an operation
        # that began after the one that made it.
        self._ticket = 0

    @property
    def cached_bytes(self) -> int:
        """Bytes held (documents plus per-entry overhead)."""
        with self._lock:
            return self._total

    def _fresh(self, key: _Key) -> bytes | None:
        """The cached document of ``key`` if it is still fresh (marks it recently used)."""
        entry = self._entries.get(key)
        if entry is None or entry.document is None or self._clock() >= entry.expires:
            return None
        self._entries.move_to_end(key)
        return entry.document

    def get(self, namespace: str, hash_name: HashName, key: Digest) -> bytes | None:
        cache_key = (namespace, hash_name, key)
        with self._lock:
            document = self._fresh(cache_key)
            if document is not None:
                return document
            self._ticket += 1
            ticket = self._ticket
        began = self._clock()
        document = self._inner.get(namespace, hash_name, key)
        self._settle(cache_key, document, ticket=ticket, began=began)
        return document

    def get_nowait(
        self, namespace: str, hash_name: HashName, key: Digest
    ) -> bytes | Literal[WouldBlock.WOULD_BLOCK]:
        """A fresh cached document, else :data:`WOULD_BLOCK` (misses are never cached)."""
        with self._lock:
            document = self._fresh((namespace, hash_name, key))
        return WOULD_BLOCK if document is None else document

    def put_if_absent(
        self, namespace: str, hash_name: HashName, key: Digest, document: bytes
    ) -> bool:
        cache_key = (namespace, hash_name, key)
        began = self._clock()
        try:
            stored = self._inner.put_if_absent(namespace, hash_name, key, document)
        except BaseException:
            self._write_settled(cache_key, None, began=began)
            raise
        # Not stored: another document is there, perhaps not the one cached; drop it.
        self._write_settled(cache_key, bytes(document) if stored else None, began=began)
        return stored

    def replace(self, namespace: str, hash_name: HashName, key: Digest, document: bytes) -> None:
        cache_key = (namespace, hash_name, key)
        began = self._clock()
        try:
            self._inner.replace(namespace, hash_name, key, document)
        except BaseException:
            self._write_settled(cache_key, None, began=began)
            raise
        self._write_settled(cache_key, bytes(document), began=began)

    def delete(self, namespace: str, hash_name: HashName, key: Digest) -> None:
        cache_key = (namespace, hash_name, key)
        try:
            self._inner.delete(namespace, hash_name, key)
        finally:
            self._write_settled(cache_key, None, began=self._clock())

    def iterate(self, namespace: str | None = None) -> Iterator[ManifestInfo]:
        return self._inner.iterate(namespace)

    def _write_settled(self, key: _Key, document: bytes | None, *, began: float) -> None:
        """After a write of ``key``: cache what was written, or mark it unknown (None)."""
        with self._lock:
            self._ticket += 1
            ticket = self._ticket
        self._settle(key, document, ticket=ticket, began=began, marker=document is None)

    def _settle(
        self,
        key: _Key,
        document: bytes | None,
        *,
        ticket: int,
        began: float,
        marker: bool = False,
    ) -> None:
        """Record the outcome of the operation holding ``ticket``, unless a later one has."""
        size = ENTRY_OVERHEAD + (0 if document is None else len(document))
        with self._lock:
            current = self._entries.get(key)
            if current is not None and current.ticket > ticket:
                return  # a later write (or read) already decided this key
            if current is not None:
                self._total -= current.size
                del self._entries[key]
            if (document is None and not marker) or size > self._max_bytes:
                return
            self._entries[key] = _Entry(
                document=document, ticket=ticket, expires=began + self._ttl_s, size=size
            )
            self._total += size
            while self._total > self._max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._total -= evicted.size
