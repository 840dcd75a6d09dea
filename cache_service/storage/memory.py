"""In-memory leaves: the contract baseline and the store of tests and ``memory://``.

Spec coverage:
* SVC-001 — :class:`MemoryBlobStore` and :class:`MemoryManifestStore`, same contract as the rest.
* SVC-002 — objects are keyed by the same names as the other leaves (:mod:`._layout`).
Out of scope: persistence and size bounds (never use this store for production data).
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from cache_service.storage._layout import (
    blob_name,
    check_namespace,
    manifest_name,
    parse_blob_name,
    parse_manifest_name,
)
from cache_service.storage.base import BlobInfo, BlobRef, ManifestInfo, StoredChunk
from hazremote.domain.digest import Digest
from hazremote.domain.model import HashName

__all__ = ["MemoryBlobStore", "MemoryManifestStore"]


@dataclass(frozen=True, slots=True, kw_only=True)
class _Entry:
    data: bytes
    modified_unix: float


class MemoryBlobStore:
    """Blobs in a dict guarded by a lock; a write is published only once fully consumed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._blobs: dict[str, _Entry] = {}

    def missing(self, refs: Sequence[BlobRef]) -> list[BlobRef]:
        names = [blob_name(ref) for ref in refs]
        with self._lock:
            return [ref for ref, name in zip(refs, names, strict=True) if name not in self._blobs]

    def open_read(self, ref: BlobRef) -> BinaryIO | None:
        name = blob_name(ref)
        with self._lock:
            entry = self._blobs.get(name)
        return None if entry is None else io.BytesIO(entry.data)

    def write(self, ref: BlobRef, stored: Iterable[StoredChunk]) -> None:
        name = blob_name(ref)
        # Consume everything first: if iterating raises, nothing is published.
        data = b"".join(stored)
        with self._lock:
            self._blobs[name] = _Entry(data=data, modified_unix=time.time())

    def delete(self, ref: BlobRef) -> None:
        name = blob_name(ref)
        with self._lock:
            self._blobs.pop(name, None)

    def iterate(self) -> Iterator[BlobInfo]:
        with self._lock:
            snapshot = list(self._blobs.items())
        for name, entry in snapshot:
            ref = parse_blob_name(name)
            if ref is not None:
                yield BlobInfo(
                    ref=ref, stored_bytes=len(entry.data), modified_unix=entry.modified_unix
                )


class MemoryManifestStore:
    """Manifest documents in a dict guarded by a lock (put_if_absent is atomic under it)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._docs: dict[str, _Entry] = {}

    def get(self, namespace: str, hash_name: HashName, key: Digest) -> bytes | None:
        name = manifest_name(namespace, hash_name, key)
        with self._lock:
            entry = self._docs.get(name)
        return None if entry is None else entry.data

    def get_nowait(self, namespace: str, hash_name: HashName, key: Digest) -> bytes | None:
        return self.get(namespace, hash_name, key)

    def put_if_absent(
        self, namespace: str, hash_name: HashName, key: Digest, document: bytes
    ) -> bool:
        name = manifest_name(namespace, hash_name, key)
        with self._lock:
            if name in self._docs:
                return False
            self._docs[name] = _Entry(data=bytes(document), modified_unix=time.time())
            return True

    def replace(self, namespace: str, hash_name: HashName, key: Digest, document: bytes) -> None:
        name = manifest_name(namespace, hash_name, key)
        with self._lock:
            self._docs[name] = _Entry(data=bytes(document), modified_unix=time.time())

    def delete(self, namespace: str, hash_name: HashName, key: Digest) -> None:
        name = manifest_name(namespace, hash_name, key)
        with self._lock:
            self._docs.pop(name, None)

    def iterate(self, namespace: str | None = None) -> Iterator[ManifestInfo]:
        if namespace is not None:
            check_namespace(namespace)
        with self._lock:
            snapshot = list(self._docs.items())
        for name, entry in snapshot:
            parsed = parse_manifest_name(name)
            if parsed is None or (namespace is not None and parsed.namespace != namespace):
                continue
            yield ManifestInfo(
                namespace=parsed.namespace,
                hash_name=parsed.hash_name,
                key=parsed.key,
                stored_bytes=len(entry.data),
                modified_unix=entry.modified_unix,
            )
