"""The storage ports of the cache service: content-addressed blobs and namespaced manifests.

Spec coverage:
* SVC-001 — one small interface per kind of data; backends (memory, file, S3) are leaves and
  behaviour (verification, read caching, metrics) comes from decorators of the same Protocol,
  composed by one factory from configuration (bb-storage's ``BlobAccess`` is the model).
* SVC-002 — backends lay objects out under a versioned prefix that names the hash function
  (e.g. ``v1/cas/blake3/<aa>/<hash>``, ``v1/ns/<namespace>/ac/<hash>/<key>``).
* RC-004 — a blob is identified by the digest of its *uncompressed* bytes plus their size;
  what a store holds and streams is its *stored form*: one zstd frame (RC-006), so bytes pass
  from storage to the wire without being recompressed.
* RC-005 — :class:`ManifestStore` stores opaque CACHE-011 documents; the completeness check
  (every referenced blob present) is the servicer's, against a :class:`BlobStore`.
Out of scope: gRPC, authentication, and the manifest's own schema (``hazremote.cache``).

Every method is synchronous; the gRPC server calls them from a thread pool (boto3 and file
I/O are blocking anyway) — except :meth:`ManifestStore.get_nowait`, which never waits for I/O
and so runs on the event loop (a thread-pool hop costs more than reading a small manifest the
OS already has in memory). Implementations must be safe for concurrent use by many threads
and by several server replicas sharing the same backing storage.
"""

from __future__ import annotations

import enum
import io
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, Final, Literal, Protocol

from hazremote.domain.digest import Digest
from hazremote.domain.model import HashName
from hazremote.errors import HazError

__all__ = [
    "WOULD_BLOCK",
    "BlobInfo",
    "BlobRef",
    "BlobStore",
    "BlobVerificationError",
    "ManifestInfo",
    "ManifestStore",
    "ReadingRaw",
    "StorageError",
    "StoredChunk",
    "WouldBlock",
]


class WouldBlock(enum.Enum):
    """The answer of a non-blocking read that cannot answer without waiting for I/O."""

    WOULD_BLOCK = "would block"


#: :meth:`ManifestStore.get_nowait`: "ask :meth:`ManifestStore.get` from a worker thread".
WOULD_BLOCK: Final = WouldBlock.WOULD_BLOCK

#: A piece of a blob's stored form given to :meth:`BlobStore.write`: bytes, or a view of
#: bytes as they arrived (a received message, a block of a raw frame) so that no layer has to
#: copy them (issue 5).
StoredChunk = bytes | memoryview


class StorageError(HazError):
    """The backing storage failed (I/O error, S3 unavailable …): an infrastructure failure."""


class BlobVerificationError(StorageError):
    """Written bytes do not match their digest or size (RC-004: INVALID_ARGUMENT), or stored
    bytes were found corrupt on read (DATA_LOSS)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BlobRef:
    """A blob's identity: hash function, digest of the uncompressed bytes, their size."""

    hash_name: HashName
    digest: Digest
    size: int


@dataclass(frozen=True, slots=True, kw_only=True)
class BlobInfo:
    ref: BlobRef
    stored_bytes: int
    modified_unix: float


@dataclass(frozen=True, slots=True, kw_only=True)
class ManifestInfo:
    namespace: str
    hash_name: HashName
    key: Digest
    stored_bytes: int
    modified_unix: float


class BlobStore(Protocol):
    """Content-addressed blobs in their stored form (one zstd frame each)."""

    def missing(self, refs: Sequence[BlobRef]) -> list[BlobRef]:
        """RC-007: the refs this store does not hold, in request order."""
        ...

    def open_read(self, ref: BlobRef) -> BinaryIO | None:
        """The stored form (a zstd frame), or None when absent. The caller closes it."""
        ...

    def write(self, ref: BlobRef, stored: Iterable[StoredChunk]) -> None:
        """Store a blob from chunks of its stored form, publishing atomically.

        The store consumes ``stored`` completely before publishing; if iterating raises
        (a verifying decorator found a mismatch, the client went away), nothing is published
        and the exception propagates. Writing a blob that is already present succeeds.

        Chunks may be of any size (a 3-byte block header, a 1 MiB message) and must not change
        until ``write`` returns: a store may keep references to them rather than copies (the
        disk store gathers several into one ``writev``).
        """
        ...

    def delete(self, ref: BlobRef) -> None:
        """Remove a blob (absent: no error). Used for corrupt data (RC-004) and GC."""
        ...

    def iterate(self) -> Iterator[BlobInfo]:
        """Every stored blob (for gc and admin commands); order unspecified."""
        ...


class ManifestStore(Protocol):
    """CACHE-011 manifest documents per (namespace, hash function, key)."""

    def get(self, namespace: str, hash_name: HashName, key: Digest) -> bytes | None: ...

    def get_nowait(
        self, namespace: str, hash_name: HashName, key: Digest
    ) -> bytes | Literal[WouldBlock.WOULD_BLOCK] | None:
        """What :meth:`get` answers, when that needs no waiting for I/O (memory, a file in
        the OS page cache); otherwise :data:`WOULD_BLOCK`. Cheap enough to call on an event
        loop: a store that cannot tell without I/O (S3) always answers :data:`WOULD_BLOCK`.
        """
        ...

    def put_if_absent(
        self, namespace: str, hash_name: HashName, key: Digest, document: bytes
    ) -> bool:
        """Store ``document`` unless one exists (atomic, race-free across replicas).

        Returns:
            True when stored, False when a document already existed (it is left alone).
        """
        ...

    def replace(self, namespace: str, hash_name: HashName, key: Digest, document: bytes) -> None:
        """Overwrite unconditionally (SEC-004: an entry whose blobs are gone may be replaced)."""
        ...

    def delete(self, namespace: str, hash_name: HashName, key: Digest) -> None: ...

    def iterate(self, namespace: str | None = None) -> Iterator[ManifestInfo]:
        """Every stored manifest (of one namespace, or all); order unspecified."""
        ...


class ReadingRaw(io.RawIOBase):
    """A readable raw file defined by its :meth:`read` (the readers the store decorators and
    backends hand out); :meth:`readinto` copies what ``read`` returns."""

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:  # pragma: no cover - always overridden
        raise NotImplementedError

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)
