"""Fault-injecting decorators of the service's storage ports, for tests of the client
against the real server (``cache_service.app.serve`` over memory stores).

Spec coverage: none of its own — infrastructure for the RC-* client tests. A test arms
faults on one :class:`Faults` shared by the decorators, per storage operation:

* ``fail``: the operation raises :class:`StorageError` (the server answers UNAVAILABLE);
* ``hang``: the operation waits (up to a bound, or until :meth:`Faults.heal`) before it
  runs — lookups or uploads only, for a half-broken server, or all of them (a black hole);
* ``corrupt_reads``: a read hands out the stored form of other bytes (the decorator sits
  below :class:`~cache_service.storage.verifying.VerifyingBlobStore`, so the server itself
  finds the corruption: DATA_LOSS);
* counters: calls per operation, the digests written, the chunks of each write (for the
  batching and deduplication assertions), and RPCs per method as they enter the server
  (:class:`CountingAccess`, an authenticator every non-public call passes first).

A server that breaks the protocol on purpose (bytes that do not match their digest,
manifests the real server refuses) is not a storage fault: ``tests.remote.lyingserver``.
"""

from __future__ import annotations

import io
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO, Literal

import zstandard

from cache_service.identity import Authenticator, Identity, OpenAccess
from cache_service.storage.base import (
    WOULD_BLOCK,
    BlobInfo,
    BlobRef,
    BlobStore,
    ManifestInfo,
    ManifestStore,
    StorageError,
    StoredChunk,
    WouldBlock,
)
from hazremote.domain.digest import Digest
from hazremote.domain.model import HashName

__all__ = [
    "ALL",
    "LOOKUPS",
    "UPLOADS",
    "CountingAccess",
    "Faults",
    "FaultyBlobStore",
    "FaultyManifestStore",
]

#: Operation names: the blob store's, then the manifest store's (``get_nowait`` counts as
#: ``manifest_get``).
BLOB_OPS = frozenset({"missing", "open_read", "write", "delete"})
MANIFEST_OPS = frozenset({"manifest_get", "put_if_absent", "replace", "manifest_delete"})
ALL = BLOB_OPS | MANIFEST_OPS
#: What a lookup (BatchGetManifests, GetManifest) does in storage.
LOOKUPS = frozenset({"manifest_get"})
#: What an upload (FindMissingBlobs, blob writes, PutManifest) does in storage.
UPLOADS = frozenset({"missing", "write", "put_if_absent", "replace"})


@dataclass
class Faults:
    """The faults armed and the calls seen; shared by both decorators (thread-safe)."""

    failing: frozenset[str] = frozenset()
    hanging: frozenset[str] = frozenset()
    hang_s: float = 0.0
    corrupt_reads: bool = False
    calls: Counter[str] = field(default_factory=Counter)
    rpcs: Counter[str] = field(default_factory=Counter)  # short method name → calls entered
    written: list[bytes] = field(default_factory=list)  # raw digests, in write order
    write_chunks: list[int] = field(default_factory=list)  # chunks per blob write
    _released: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def fail(self, ops: Iterable[str] = ALL) -> None:
        """Make ``ops`` raise :class:`StorageError` from now on."""
        self.failing = frozenset(ops)

    def hang(self, seconds: float, ops: Iterable[str] = ALL) -> None:
        """Make ``ops`` wait ``seconds`` (or until :meth:`heal`) before they run."""
        self._released.clear()
        self.hang_s = seconds
        self.hanging = frozenset(ops)

    def heal(self) -> None:
        """Disarm every fault and let waiting operations go on (counters are kept)."""
        self.failing = frozenset()
        self.hanging = frozenset()
        self.hang_s = 0.0
        self.corrupt_reads = False
        self._released.set()

    def armed(self, op: str) -> bool:
        return op in self.failing or op in self.hanging

    def enter(self, op: str) -> None:
        """Count ``op``, then apply its faults."""
        with self._lock:
            self.calls[op] += 1
        if op in self.hanging:
            self._released.wait(self.hang_s)
        if op in self.failing:
            raise StorageError(f"fault injected: {op} fails")

    def count_rpc(self, method: str) -> None:
        with self._lock:
            self.rpcs[method.rpartition("/")[2]] += 1

    def record_write(self, raw: bytes, chunks: int) -> None:
        with self._lock:
            self.written.append(raw)
            self.write_chunks.append(chunks)


def _corrupted(stored: bytes) -> bytes:
    """The stored form (one zstd frame) of the same blob with its first byte flipped."""
    data = zstandard.ZstdDecompressor().decompressobj().decompress(stored)
    changed = bytes([data[0] ^ 0xFF]) + data[1:] if data else b"x"
    return zstandard.ZstdCompressor().compress(changed)


class FaultyBlobStore:
    """A :class:`BlobStore` decorator applying :class:`Faults` (wrap the leaf with it)."""

    def __init__(self, inner: BlobStore, faults: Faults) -> None:
        self._inner = inner
        self._faults = faults

    def missing(self, refs: Sequence[BlobRef]) -> list[BlobRef]:
        self._faults.enter("missing")
        return self._inner.missing(refs)

    def open_read(self, ref: BlobRef) -> BinaryIO | None:
        self._faults.enter("open_read")
        reader = self._inner.open_read(ref)
        if reader is None or not self._faults.corrupt_reads:
            return reader
        with reader:
            return io.BytesIO(_corrupted(reader.read()))

    def write(self, ref: BlobRef, stored: Iterable[StoredChunk]) -> None:
        self._faults.enter("write")
        count = 0

        def counted() -> Iterator[StoredChunk]:
            nonlocal count
            for chunk in stored:
                count += 1
                yield chunk

        self._inner.write(ref, counted())
        self._faults.record_write(ref.digest.raw, count)

    def delete(self, ref: BlobRef) -> None:
        self._faults.enter("delete")
        self._inner.delete(ref)

    def iterate(self) -> Iterator[BlobInfo]:
        return self._inner.iterate()


class FaultyManifestStore:
    """A :class:`ManifestStore` decorator applying :class:`Faults`."""

    def __init__(self, inner: ManifestStore, faults: Faults) -> None:
        self._inner = inner
        self._faults = faults

    def get(self, namespace: str, hash_name: HashName, key: Digest) -> bytes | None:
        self._faults.enter("manifest_get")
        return self._inner.get(namespace, hash_name, key)

    def get_nowait(
        self, namespace: str, hash_name: HashName, key: Digest
    ) -> bytes | Literal[WouldBlock.WOULD_BLOCK] | None:
        if self._faults.armed("manifest_get"):
            return WOULD_BLOCK  # faults apply in a storage thread, never on the event loop
        self._faults.enter("manifest_get")
        return self._inner.get_nowait(namespace, hash_name, key)

    def put_if_absent(
        self, namespace: str, hash_name: HashName, key: Digest, document: bytes
    ) -> bool:
        self._faults.enter("put_if_absent")
        return self._inner.put_if_absent(namespace, hash_name, key, document)

    def replace(self, namespace: str, hash_name: HashName, key: Digest, document: bytes) -> None:
        self._faults.enter("replace")
        self._inner.replace(namespace, hash_name, key, document)

    def delete(self, namespace: str, hash_name: HashName, key: Digest) -> None:
        self._faults.enter("manifest_delete")
        self._inner.delete(namespace, hash_name, key)

    def iterate(self, namespace: str | None = None) -> Iterator[ManifestInfo]:
        return self._inner.iterate(namespace)


class CountingAccess:
    """An authenticator counting every non-public RPC as it enters the server (into
    :attr:`Faults.rpcs`), then asking ``inner`` (default: open access)."""

    def __init__(self, faults: Faults, inner: Authenticator | None = None) -> None:
        self._faults = faults
        self._inner = inner if inner is not None else OpenAccess()

    def authenticate(self, *, method: str, metadata: Mapping[str, str]) -> Identity:
        self._faults.count_rpc(method)
        return self._inner.authenticate(method=method, metadata=metadata)
