"""A synchronous :class:`~cache_service.storage.base.BlobStore` leaf over the ContentStore API.

Spec coverage:
* SVC-001 — a remote service is one more blob leaf: code written against the storage port
  (a worker's input cache, a read cache, the contract tests) can use a ``haz-cache-service``
  as its backing store without knowing it is remote.
* RC-004 — blobs are named by the digest and size of their uncompressed bytes; the server
  verifies every write and rejects a mismatch (``INVALID_ARGUMENT`` →
  :class:`BlobVerificationError`, nothing published).
* RC-006 — blobs travel as streams of bounded chunks in their stored form (one zstd frame):
  ``ReadBlob`` asks for zstd from offset 0, which the server passes through from storage;
  ``WriteBlob`` sends the stored-form chunks it is given.
* RC-007 — ``missing`` is ``FindMissingBlobs``, split into batches of the server's
  ``max_batch_items``.
* SPEC §5 — an optional token travels as ``authorization: Bearer <token>``.

Out of scope — this is a *read/write* leaf, not the whole Protocol: the wire API has no
delete and no listing (clients must never remove shared data; gc is the server's), so
:meth:`GrpcBlobStore.delete` and :meth:`GrpcBlobStore.iterate` raise
:class:`NotImplementedError`. TLS (SEC-005), retries and circuit breaking (the run-time
client :mod:`hazremote.remote.client` owns RC-003) are out of scope too.

Dependency note: this module imports the storage port of ``cache_service`` (its
exceptions and value types), the one place where the client package depends on the service
package; it is imported only by code that wants a remote store as a storage leaf.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, BinaryIO

import grpc

from cache_service.storage.base import (
    BlobInfo,
    BlobRef,
    BlobVerificationError,
    StorageError,
    StoredChunk,
)
from hazremote.domain.model import HashName
from hazremote.remote._wire import WIRE_ZSTD, digest_to_wire, hash_function
from hazremote.wire.haz.remote.v1 import cache_pb2, cache_pb2_grpc

__all__ = ["GrpcBlobStore"]

#: Spool reads in memory up to this size, then on disk (RC-006: bounded memory).
_SPOOL_MEMORY = 8 << 20
_MAX_MESSAGE = 64 << 20
_DEFAULT_CHUNK = 1 << 20


class GrpcBlobStore:
    """Blobs of a ``haz-cache-service`` at ``target`` (``HOST:PORT``), as a storage leaf.

    Args:
        target: ``HOST:PORT`` of the service (plaintext gRPC).
        hash_name: Kept for symmetry with the workspace's hash function; every call names
            the hash of the ref it is given, so mixed refs work.
        timeout_s: Deadline of each call (a whole stream counts as one call).
        token: Bearer token, when the service requires one.
        chunk_size: Largest ``WriteBlob`` message payload; ``None`` takes the server's
            preferred stream chunk size.

    Usage::

        store = GrpcBlobStore("127.0.0.1:7070", hash_name=HashName.BLAKE3)
        try:
            store.write(ref, [stored_form])
            with store.open_read(ref) as reader: ...
        finally:
            store.close()
    """

    def __init__(
        self,
        target: str,
        *,
        hash_name: HashName,
        timeout_s: float = 30.0,
        token: str | None = None,
        chunk_size: int | None = None,
    ) -> None:
        self.hash_name = hash_name
        self._timeout_s = timeout_s
        self._metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {token}"),) if token else ()
        )
        self._channel = grpc.insecure_channel(
            target,
            options=[
                ("grpc.max_receive_message_length", _MAX_MESSAGE),
                ("grpc.max_send_message_length", _MAX_MESSAGE),
            ],
        )
        self._content = cache_pb2_grpc.ContentStoreStub(self._channel)
        self._capabilities = cache_pb2_grpc.CapabilitiesStub(self._channel)
        self._chunk_size = chunk_size
        self._batch_items: int | None = None

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> GrpcBlobStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- BlobStore ------------------------------------------------------------------------

    def missing(self, refs: Sequence[BlobRef]) -> list[BlobRef]:
        """RC-007: the refs the service does not hold, in request order."""
        if not refs:
            return []
        limit = self._limits()[0]
        absent: set[tuple[HashName, bytes, int]] = set()
        by_hash: dict[HashName, list[BlobRef]] = {}
        for ref in refs:
            by_hash.setdefault(ref.hash_name, []).append(ref)
        for name, group in by_hash.items():
            for start in range(0, len(group), limit):
                batch = group[start : start + limit]
                request = cache_pb2.FindMissingBlobsRequest(
                    hash_function=hash_function(name),
                    digests=[digest_to_wire(r.digest, r.size) for r in batch],
                )
                reply = self._call(self._content.FindMissingBlobs, request)
                absent.update((name, bytes(d.hash), int(d.size_bytes)) for d in reply.missing)
        return [r for r in refs if (r.hash_name, r.digest.raw, r.size) in absent]

    def open_read(self, ref: BlobRef) -> BinaryIO | None:
        """The stored form (one zstd frame) spooled from ``ReadBlob``, or None when absent.

        The whole stream is received before returning, so a broken stream raises here
        (:class:`StorageError`) rather than in the middle of the caller's reads. The bytes
        are not verified: wrap the store in a ``VerifyingBlobStore`` to check them.
        """
        request = cache_pb2.ReadBlobRequest(
            hash_function=hash_function(ref.hash_name),
            digest=digest_to_wire(ref.digest, ref.size),
            offset=0,
            accepted_compressions=[WIRE_ZSTD],
        )
        spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_MEMORY)  # noqa: SIM115
        try:
            stream = self._content.ReadBlob(
                request, timeout=self._timeout_s, metadata=self._metadata
            )
            first = True
            for chunk in stream:
                if first and chunk.compression != WIRE_ZSTD:
                    raise StorageError(
                        f"ReadBlob of {ref.digest} answered encoding {chunk.compression}, "
                        "not the zstd stored form it was asked for"
                    )
                first = False
                spool.write(chunk.data)
        except grpc.RpcError as exc:
            spool.close()
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise _storage_error("ReadBlob", exc) from None
        except BaseException:
            spool.close()
            raise
        spool.seek(0)
        return spool  # type: ignore[return-value]  # a SpooledTemporaryFile is a BinaryIO

    def write(self, ref: BlobRef, stored: Iterable[StoredChunk]) -> None:
        """Stream ``stored`` (the zstd frame, in chunks) through ``WriteBlob``.

        The service verifies the bytes against ``ref`` before publishing (RC-004).

        Raises:
            BlobVerificationError: the service rejected the bytes (``INVALID_ARGUMENT``).
            StorageError: any other failure; nothing is published.
        """
        chunk_size = self._limits()[1]
        failure: list[BaseException] = []

        def messages() -> Iterator[Any]:
            first = cache_pb2.WriteBlobChunk(
                hash_function=hash_function(ref.hash_name),
                digest=digest_to_wire(ref.digest, ref.size),
                compression=WIRE_ZSTD,
            )
            pending = first
            try:
                for piece in stored:
                    for start in range(0, len(piece), chunk_size):
                        part = piece[start : start + chunk_size]
                        pending.data = part if isinstance(part, bytes) else bytes(part)
                        yield pending
                        pending = cache_pb2.WriteBlobChunk()
            except BaseException as exc:
                # The caller's source failed: end the call without a finish chunk, so the
                # service publishes nothing, then re-raise the source's own exception.
                failure.append(exc)
                return
            pending.finish = True
            yield pending

        try:
            self._content.WriteBlob(messages(), timeout=self._timeout_s, metadata=self._metadata)
        except grpc.RpcError as exc:
            if failure:
                raise failure[0] from None
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                raise BlobVerificationError(exc.details() or "rejected by the service") from None
            raise _storage_error("WriteBlob", exc) from None
        if failure:
            raise failure[0]

    def delete(self, ref: BlobRef) -> None:
        """Not available: the wire API has no delete (only the service's gc removes data)."""
        raise NotImplementedError("GrpcBlobStore is read/write only: the wire API has no delete")

    def iterate(self) -> Iterator[BlobInfo]:
        """Not available: the wire API does not list blobs."""
        raise NotImplementedError("GrpcBlobStore cannot list blobs: the wire API has no listing")

    # -- helpers --------------------------------------------------------------------------

    def _limits(self) -> tuple[int, int]:
        """(max batch items, write chunk size), asked of the service once."""
        if self._batch_items is None:
            caps = self._call(
                self._capabilities.GetCapabilities, cache_pb2.GetCapabilitiesRequest()
            )
            self._batch_items = max(1, int(caps.max_batch_items) or 1000)
            if self._chunk_size is None:
                self._chunk_size = int(caps.stream_chunk_size_bytes) or _DEFAULT_CHUNK
        return self._batch_items, self._chunk_size or _DEFAULT_CHUNK

    def _call(self, method: Any, request: Any) -> Any:
        try:
            return method(request, timeout=self._timeout_s, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise _storage_error(type(request).__name__, exc) from None


def _storage_error(call: str, exc: grpc.RpcError) -> StorageError:
    code = exc.code()
    name = code.name if code is not None else "UNKNOWN"
    return StorageError(f"{call} failed: {name}: {exc.details()}")
