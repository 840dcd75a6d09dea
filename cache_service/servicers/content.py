"""``haz.remote.v1.ContentStore``: thin — parse, call :class:`BlobService`, build the reply.

Spec coverage:
* RC-004, RC-006, RC-007 — through :class:`~cache_service.cas.BlobService`; batch calls report
  a status per item (``status_of`` decides the code, here as everywhere).
* SVC-006 — stream slots bound concurrent ReadBlob/WriteBlob streams (``RESOURCE_EXHAUSTED``).
* WriteBlob is verified while streaming; a stream that ends without ``finish`` (client went
  away) publishes nothing.
Out of scope: the logic itself (``cache_service.cas``), status mapping (``_status``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Generator, Iterator
from typing import Any

from cache_service.cas import BlobService, WriteItem
from cache_service.errors import InvalidRequestError
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
from hazremote._proto.haz.remote.v1 import cache_pb2, cache_pb2_grpc

__all__ = ["ContentStoreServicer"]

#: A WriteBlob client silent this long is gone: the storage thread gives up (nothing published).
STREAM_IDLE_TIMEOUT_S = 60.0


async def _next_or_none(iterator: AsyncIterator[Any]) -> Any:
    try:
        return await iterator.__anext__()
    except StopAsyncIteration:
        return None


def _close_quietly(chunks: Generator[bytes, None, None]) -> None:
    """Release the stored data of an abandoned stream. A read cancelled while its thread was
    inside the generator leaves it running; it then finishes on its own."""
    with contextlib.suppress(ValueError):  # "generator already executing"
        chunks.close()


class ContentStoreServicer(cache_pb2_grpc.ContentStoreServicer):  # type: ignore[misc]
    def __init__(self, *, blobs: BlobService, offload: Offload, slots: StreamSlots) -> None:
        self._blobs = blobs
        self._offload = offload
        self._slots = slots

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
    ) -> AsyncIterator[cache_pb2.ReadBlobChunk]:
        ref = blob_ref(request.hash_function, request.digest)
        accepted = accepted_encodings(request.accepted_compressions)
        with self._slots.hold():
            stream = await self._offload(
                self._blobs.open_stream, ref, offset=request.offset, accepted=accepted
            )
            compression = wire_compression(stream.encoding)
            sent = False
            try:
                while (chunk := await self._offload(next, stream.chunks, None)) is not None:
                    if sent:
                        yield cache_pb2.ReadBlobChunk(data=chunk)
                    else:
                        yield cache_pb2.ReadBlobChunk(compression=compression, data=chunk)
                        sent = True
                if not sent:  # an empty remainder still tells the client its encoding
                    yield cache_pb2.ReadBlobChunk(compression=compression)
            finally:
                await self._offload(_close_quietly, stream.chunks)

    @maps_errors
    async def WriteBlob(
        self, request_iterator: AsyncIterator[cache_pb2.WriteBlobChunk], context: Any
    ) -> cache_pb2.WriteBlobResponse:
        first = await _next_or_none(request_iterator)
        if first is None:
            raise InvalidRequestError("WriteBlob stream carried no chunk")
        ref = blob_ref(first.hash_function, first.digest)
        encoding = encoding_of(first.compression)
        loop = asyncio.get_running_loop()

        def chunks() -> Iterator[bytes]:
            # Runs in a storage thread: pulls each message from the event loop as the store
            # consumes the previous one, so memory holds one chunk at a time (RC-006).
            message = first
            while True:
                if message.data:
                    yield message.data
                if message.finish:
                    return
                future = asyncio.run_coroutine_threadsafe(_next_or_none(request_iterator), loop)
                message = future.result(timeout=STREAM_IDLE_TIMEOUT_S)
                if message is None:
                    raise InvalidRequestError("WriteBlob stream ended before its finish chunk")

        with self._slots.hold():
            committed = await self._offload(self._blobs.write_stream, ref, encoding, chunks())
        return cache_pb2.WriteBlobResponse(committed_size_bytes=committed)
