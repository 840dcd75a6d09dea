"""``haz.remote.v1.ContentStore``: thin — parse, call :class:`BlobService`, build the reply.

Spec coverage:
* RC-004, RC-006, RC-007 — through :class:`~cache_service.cas.BlobService`; batch items get a
  status each.
* SVC-006 — stream slots bound blob streams, in all and per caller (:func:`stream_caller`).
* Issue 13 — a WriteBlob waits for its client in the stream pool, never the storage pool.
Out of scope: the logic (``cache_service.cas``), the wire codec (:mod:`.chunk_codec`), the
thread bridges (:mod:`.stream_bridges`), status mapping (``_status``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from cache_service.cas import BlobService, WriteItem
from cache_service.errors import InvalidRequestError
from cache_service.identity import ANONYMOUS, current_identity
from cache_service.offload import Offload, StreamSlots
from cache_service.servicers._convert import (
    accepted_encodings,
    blob_ref,
    digest_message,
    encoding_of,
    wire_compression,
)
from cache_service.servicers._status import (
    CODE_NUMBERS,
    maps_errors,
    maps_errors_stream,
    status_of,
)
from cache_service.servicers.chunk_codec import encode_read_chunks
from cache_service.servicers.stream_bridges import Inbox, Outbox, ReadAheadBudget, next_or_none
from hazremote.wire.haz.remote.v1 import cache_pb2, cache_pb2_grpc

__all__ = ["STREAM_IDLE_TIMEOUT_S", "ContentStoreServicer", "stream_caller"]

#: A WriteBlob client silent this long is gone: the storage thread gives up (nothing published)
#: and the call ends ``DEADLINE_EXCEEDED``. The default of ``stream_idle_timeout``.
STREAM_IDLE_TIMEOUT_S = 60.0


def stream_caller(context: Any) -> str:
    """Who holds a stream, as a limit's message names it: the token (``token 'ci'``), or
    without one the peer's host (``peer 127.0.0.1``: every connection from one machine)."""
    identity = current_identity()
    if identity is not ANONYMOUS:
        return f"token {identity.name!r}"
    peer = str(context.peer())  # ipv4:127.0.0.1:5000, ipv6:[::1]:5000, unix:/path
    kind, _, address = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        address = address.rpartition(":")[0].strip("[]")
    return f"peer {address or peer}"


class ContentStoreServicer(cache_pb2_grpc.ContentStoreServicer):  # type: ignore[misc]
    def __init__(
        self,
        *,
        blobs: BlobService,
        offload: Offload,
        streams: Offload,
        slots: StreamSlots,
        read_ahead: ReadAheadBudget,
        idle_timeout: float = STREAM_IDLE_TIMEOUT_S,
        released: Callable[[], None] = lambda: None,
    ) -> None:
        """``released`` is called (on the event loop) when a ReadBlob stream has given back
        what it held, e.g. to return freed heap to the OS."""
        self._blobs = blobs
        self._read_ahead = read_ahead
        self._released = released
        self._offload = offload
        self._streams = streams
        self._slots = slots
        self._idle_timeout = idle_timeout

    @maps_errors
    async def FindMissingBlobs(
        self, request: cache_pb2.FindMissingBlobsRequest, context: Any
    ) -> cache_pb2.FindMissingBlobsResponse:
        refs = [blob_ref(request.hash_function, d) for d in request.digests]
        missing = await self._offload(self._blobs.find_missing, refs)
        return cache_pb2.FindMissingBlobsResponse(missing=[digest_message(r) for r in missing])

    @maps_errors
    async def BatchReadBlobs(
        self, request: cache_pb2.BatchReadBlobsRequest, context: Any
    ) -> cache_pb2.BatchReadBlobsResponse:
        refs = [blob_ref(request.hash_function, d) for d in request.digests]
        accepted = accepted_encodings(request.accepted_compressions)
        outcomes = await self._offload(self._blobs.read_batch, refs, accepted)
        items = []
        for outcome in outcomes:
            item = cache_pb2.BatchReadBlobsResponse.Item(digest=digest_message(outcome.ref))
            if outcome.error is None:
                item.data = outcome.data
                item.compression = wire_compression(outcome.encoding)
            else:
                code, message = status_of(outcome.error)
                item.status_code = CODE_NUMBERS[code]
                item.status_message = message
            items.append(item)
        return cache_pb2.BatchReadBlobsResponse(items=items)

    @maps_errors
    async def BatchUpdateBlobs(
        self, request: cache_pb2.BatchUpdateBlobsRequest, context: Any
    ) -> cache_pb2.BatchUpdateBlobsResponse:
        items = [
            WriteItem(
                ref=blob_ref(request.hash_function, item.digest),
                data=item.data,
                encoding=encoding_of(item.compression),
            )
            for item in request.items
        ]
        errors = await self._offload(self._blobs.write_batch, items)
        replies = []
        for item, error in zip(items, errors, strict=True):
            reply = cache_pb2.BatchUpdateBlobsResponse.Item(digest=digest_message(item.ref))
            if error is not None:
                code, message = status_of(error)
                reply.status_code = CODE_NUMBERS[code]
                reply.status_message = message
            replies.append(reply)
        return cache_pb2.BatchUpdateBlobsResponse(items=replies)

    @maps_errors_stream
    async def ReadBlob(
        self, request: cache_pb2.ReadBlobRequest, context: Any
    ) -> AsyncIterator[bytes]:
        """Yields encoded ``ReadBlobChunk`` messages (:func:`encode_read_chunks`)."""
        ref = blob_ref(request.hash_function, request.digest)
        accepted = accepted_encodings(request.accepted_compressions)
        with self._slots.hold(stream_caller(context)):
            stream = await self._offload(
                self._blobs.open_stream, ref, offset=request.offset, accepted=accepted
            )
            messages = encode_read_chunks(wire_compression(stream.encoding), stream.chunks)
            outbox = Outbox(messages, self._offload, self._read_ahead)
            try:
                while (message := await outbox.get()) is not None:
                    yield message
            finally:
                await outbox.close()  # the stream slot is given back only then
                self._released()

    @maps_errors
    async def WriteBlob(
        self, request_iterator: AsyncIterator[cache_pb2.WriteBlobChunk], context: Any
    ) -> cache_pb2.WriteBlobResponse:
        with self._slots.hold(stream_caller(context)):
            return await self._write(request_iterator)

    async def _write(
        self, request_iterator: AsyncIterator[cache_pb2.WriteBlobChunk]
    ) -> cache_pb2.WriteBlobResponse:
        first = await next_or_none(request_iterator)
        if first is None:
            raise InvalidRequestError("WriteBlob stream carried no chunk")
        ref = blob_ref(first.hash_function, first.digest)
        encoding = encoding_of(first.compression)
        inbox = Inbox(request_iterator, first, self._idle_timeout)

        def chunks() -> Iterator[bytes | memoryview]:
            # Runs in a storage thread, while the event loop receives the next messages.
            message = first
            while True:
                data = message.data  # a view (decode_write_chunk) or bytes (protobuf)
                if data:
                    yield data
                if message.finish:
                    return
                message = inbox.get()
                if message is None:
                    raise InvalidRequestError("WriteBlob stream ended before its finish chunk")

        try:
            committed = await self._streams(self._blobs.write_stream, ref, encoding, chunks())
        finally:
            inbox.close()
        return cache_pb2.WriteBlobResponse(committed_size_bytes=committed)
