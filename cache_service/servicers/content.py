"""``haz.remote.v1.ContentStore``: thin — parse, call :class:`BlobService`, build the reply.

Spec coverage:
* RC-004, RC-006, RC-007 — through :class:`~cache_service.cas.BlobService`; batch calls report
  a status per item (``status_of`` decides the code, here as everywhere).
* SVC-006 — stream slots bound concurrent ReadBlob/WriteBlob streams, in all and per caller
  (:func:`stream_caller`), with ``RESOURCE_EXHAUSTED``.
* Issue 13 — a WriteBlob waits for its client in a thread of the stream pool
  (``streams``), never in the storage pool the lookups use.
* WriteBlob is verified while streaming; a stream that ends without ``finish`` (client went
  away) publishes nothing. Its messages are decoded by :func:`decode_write_chunk`, whose
  ``data`` is a view of the received bytes (protobuf copies a 1 MiB chunk twice, once to
  parse and once more to hand out ``data``; :func:`add_content_store` registers it). The
  event loop receives up to :data:`RECEIVE_AHEAD` messages ahead of the storage thread, and
  a storage thread reads ReadBlob chunks up to :data:`READ_AHEAD` ahead of the one being
  sent, so network and storage work overlap with bounded memory.
* Issue 13 — read-ahead takes places in one server-wide :class:`ReadAheadBudget`
  (:data:`READ_AHEAD_BUDGET`): a stream whose client stops reading holds the chunk gRPC is
  sending and no read-ahead once the budget is taken; everything a stream holds is released
  when it ends or is cancelled.
* Issue 13 — a WriteBlob client that sends nothing for ``stream_idle_timeout`` is dropped
  with :class:`~cache_service.errors.ClientIdleError` (``DEADLINE_EXCEEDED``, the client's
  fault); nothing is published.
Out of scope: the logic itself (``cache_service.cas``), status mapping (``_status``).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any

import grpc

from cache_service.cas import BlobService, WriteItem
from cache_service.errors import ClientIdleError, InvalidRequestError
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
from hazremote.wire.haz.remote.v1 import cache_pb2, cache_pb2_grpc, digest_pb2

__all__ = [
    "ContentStoreServicer",
    "ReadAheadBudget",
    "WriteChunk",
    "add_content_store",
    "decode_write_chunk",
    "encode_read_chunks",
    "stream_caller",
]

#: A WriteBlob client silent this long is gone: the storage thread gives up (nothing published)
#: and the call ends ``DEADLINE_EXCEEDED``. The default of ``stream_idle_timeout``.
STREAM_IDLE_TIMEOUT_S = 60.0


#: WriteBlob messages received ahead of the storage thread storing them (memory: this many
#: chunks), so receiving and storing overlap.
RECEIVE_AHEAD = 2
#: ReadBlob chunks read (and verified) ahead of the one being sent.
READ_AHEAD = 2
#: Issue 13: bytes of ReadBlob chunks read ahead of their clients, all streams together
#: (:class:`ReadAheadBudget`): 32 streams with full read-ahead at the default 1 MiB chunk.
READ_AHEAD_BUDGET = 64 << 20
#: A ReadBlob reading thread whose client takes no chunk for this long returns to the pool.
READ_PARK_S = 0.05


@dataclass(frozen=True, slots=True)
class WriteChunk:
    """A decoded ``WriteBlobChunk`` whose ``data`` is a view of the received message."""

    hash_function: int
    digest: digest_pb2.Digest
    compression: int
    data: memoryview
    finish: bool


#: The key of ``WriteBlobChunk.data``: field 4, wire type 2 (length-delimited).
_DATA_KEY = (4 << 3) | 2
_NO_FIELDS = cache_pb2.WriteBlobChunk()
_EMPTY = memoryview(b"")


class _Irregular(Exception):
    """The message is not in the plain form :func:`decode_write_chunk` reads itself."""


def _varint(raw: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = raw[pos]  # IndexError: truncated
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise _Irregular


def decode_write_chunk(raw: bytes) -> WriteChunk:
    """A ``WriteBlobChunk`` from its encoding, its ``data`` a view of ``raw`` (no copy).

    The top-level fields are walked here; every field but ``data`` is handed to protobuf as it
    is (in order, so repeated and unknown fields mean what they mean to protobuf). Anything
    out of the ordinary (a group, a truncated field) is left to protobuf whole.

    Raises:
        google.protobuf.message.DecodeError: ``raw`` is not a valid message.
    """
    end = len(raw)
    data = _EMPTY
    rest: list[memoryview] = []
    view = memoryview(raw)
    pos = 0
    try:
        while pos < end:
            start = pos
            key, pos = _varint(raw, pos)
            wire_type = key & 7
            if wire_type == 0:
                pos = _varint(raw, pos)[1]
            elif wire_type == 2:
                if key == _DATA_KEY and pos - start != 1:
                    raise _Irregular  # a key in more bytes than it needs
                length, pos = _varint(raw, pos)
                if key == _DATA_KEY and pos + length <= end:
                    data = view[pos : pos + length]  # the last occurrence wins, as in protobuf
                    pos += length
                    continue
                pos += length
            elif wire_type == 1:
                pos += 8
            elif wire_type == 5:
                pos += 4
            else:
                raise _Irregular
            if pos > end:
                raise _Irregular
            rest.append(view[start:pos])
    except (_Irregular, IndexError):
        fields = cache_pb2.WriteBlobChunk.FromString(raw)
        data = memoryview(fields.data)
    else:
        fields = cache_pb2.WriteBlobChunk.FromString(b"".join(rest)) if rest else _NO_FIELDS
    return WriteChunk(
        hash_function=fields.hash_function,
        digest=fields.digest,
        compression=fields.compression,
        data=data,
        finish=fields.finish,
    )


#: The key of ``ReadBlobChunk.data``: field 2, wire type 2.
_READ_DATA_KEY = b"\x12"


def _varint_bytes(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_read_chunks(
    compression: cache_pb2.Compression, chunks: Generator[bytes, None, None]
) -> Generator[bytes, None, None]:
    """The encoded ``ReadBlobChunk`` messages of a ReadBlob stream: byte for byte what protobuf
    serializes (``compression`` on the first, which is sent even for an empty remainder), built
    with one copy of each chunk where building and serializing messages costs two, and in the
    storage thread that reads the chunks rather than on the event loop. Closing it closes
    ``chunks`` (releasing the stored data)."""
    head = cache_pb2.ReadBlobChunk(compression=compression).SerializeToString()
    sent = False
    try:
        for chunk in chunks:
            if chunk:
                yield b"".join((head, _READ_DATA_KEY, _varint_bytes(len(chunk)), chunk))
                head, sent = b"", True
        if not sent:  # an empty remainder still tells the client its encoding
            yield head
    finally:
        chunks.close()


def _encoded(message: Any) -> bytes:
    """A response that is already encoded passes as it is."""
    return message if isinstance(message, bytes) else message.SerializeToString()


def add_content_store(servicer: ContentStoreServicer, server: Any) -> None:
    """Register ``servicer`` on ``server`` as the generated
    ``add_ContentStoreServicer_to_server`` does, except that WriteBlob messages are decoded by
    :func:`decode_write_chunk` and ReadBlob sends the messages it encoded itself."""
    captured = _CapturingServer()
    cache_pb2_grpc.add_ContentStoreServicer_to_server(servicer, captured)
    handlers = dict(captured.handlers)
    generated = handlers["WriteBlob"]
    handlers["WriteBlob"] = grpc.stream_unary_rpc_method_handler(
        servicer.WriteBlob,
        request_deserializer=decode_write_chunk,
        response_serializer=generated.response_serializer,
    )
    handlers["ReadBlob"] = grpc.unary_stream_rpc_method_handler(
        servicer.ReadBlob,
        request_deserializer=handlers["ReadBlob"].request_deserializer,
        response_serializer=_encoded,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(captured.service, handlers),)
    )
    server.add_registered_method_handlers(captured.service, handlers)


class _CapturingServer:
    """Takes the method handlers a generated registration function builds."""

    def __init__(self) -> None:
        self.service = ""
        self.handlers: dict[str, grpc.RpcMethodHandler] = {}

    def add_generic_rpc_handlers(self, generic_handlers: Any) -> None:
        pass

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        self.service, self.handlers = service, handlers


class _Inbox:
    """Receives a WriteBlob stream on the event loop, up to :data:`RECEIVE_AHEAD` messages
    ahead of the storage thread that takes them with :meth:`get` (bounded memory, RC-006).

    The storage thread wakes the event loop only when the inbox was full."""

    def __init__(
        self, requests: AsyncIterator[cache_pb2.WriteBlobChunk], first: Any, idle_timeout: float
    ) -> None:
        self._requests = requests
        self._idle_timeout = idle_timeout
        self._loop = asyncio.get_running_loop()
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._room = asyncio.Event()
        self._full = False
        self._task = None if first.finish else self._loop.create_task(self._receive())

    async def _receive(self) -> None:
        try:
            while True:
                while self._queue.qsize() >= RECEIVE_AHEAD:
                    self._room.clear()
                    self._full = True
                    if self._queue.qsize() >= RECEIVE_AHEAD:  # not taken in between
                        await self._room.wait()
                    self._full = False
                message = await _next_or_none(self._requests)
                self._queue.put(message)
                if message is None or message.finish:
                    return
        except Exception as exc:  # the stream broke: the storage thread raises it
            self._queue.put(_Broken(exc))

    def get(self) -> Any:
        """The next message (None: the stream ended), in the storage thread.

        Raises:
            ClientIdleError: the client sent nothing for the idle timeout.
        """
        try:
            item = self._queue.get(timeout=self._idle_timeout)
        except queue.Empty:
            raise ClientIdleError(
                f"WriteBlob client sent nothing for {self._idle_timeout:g} s "
                "(stream idle timeout); nothing was stored"
            ) from None
        if self._full:
            self._loop.call_soon_threadsafe(self._room.set)
        if isinstance(item, _Broken):
            raise item.error
        return item

    def close(self) -> None:
        """Stop receiving; a storage thread still waiting (the call was cancelled) gets an
        error at once, so it removes what it wrote."""
        if self._task is not None:
            self._task.cancel()
        self._queue.put(_Broken(InvalidRequestError("WriteBlob call ended")))


class ReadAheadBudget:
    """Issue 13: the ReadBlob chunks read ahead of their clients, all streams together.

    A chunk the event loop is waiting for is read without it; only chunks read *ahead* take a
    place, given back when the chunk is taken (or its stream closes). So clients that open
    streams and stop reading hold at most ``chunks`` read-ahead chunks between them, however
    many streams they open, and a client that keeps up still gets read-ahead while places
    are free."""

    def __init__(self, *, chunks: int) -> None:
        self.chunks = chunks
        self._places = threading.Semaphore(chunks)

    @classmethod
    def for_chunk_size(cls, chunk_size: int) -> ReadAheadBudget:
        """:data:`READ_AHEAD_BUDGET` bytes of ``chunk_size`` chunks (at least one stream's
        :data:`READ_AHEAD`)."""
        return cls(chunks=max(READ_AHEAD_BUDGET // chunk_size, READ_AHEAD))

    def take(self) -> bool:
        """Take a place if one is free (any thread)."""
        return self._places.acquire(blocking=False)

    def give(self) -> None:
        self._places.release()


class _Outbox:
    """Reads a ReadBlob stream's chunks in a storage thread, up to :data:`READ_AHEAD` chunks
    ahead of the event loop that sends them (:meth:`get`).

    The reading thread stays only while the client keeps up: when no chunk is taken for
    :data:`READ_PARK_S` it returns to the pool, and :meth:`get` starts a new one, so clients
    that stop reading never hold the storage threads other calls need. A chunk read ahead of
    demand takes a place in the server's :class:`ReadAheadBudget`; without one the thread
    returns to the pool until :meth:`get` waits for a chunk (issue 13: bounded memory for
    streams nobody reads)."""

    def __init__(
        self, chunks: Generator[bytes, None, None], offload: Offload, budget: ReadAheadBudget
    ) -> None:
        self._chunks = chunks
        self._offload = offload
        self._budget = budget
        self._loop = asyncio.get_running_loop()
        self._ready: asyncio.Queue[tuple[bytes | _Broken | None, bool]] = asyncio.Queue()
        self._room = threading.Semaphore(READ_AHEAD)
        self._stopped = False
        self._ended = False  # the last item (end or error) was read
        self._waiting = 0  # items delivered and not yet taken (event loop only)
        #: The event loop waits for a chunk nothing was read for (set by the loop, taken by
        #: the reading thread): that chunk is read without the budget.
        self._demand = True
        self._reader: asyncio.Future[None] | None = None
        self._start()

    def _start(self) -> None:
        self._reader = asyncio.ensure_future(self._offload(self._read))

    def _read(self) -> None:
        """In a storage thread: read chunks (verified as they are read) while there is room
        in this stream and demand or a place in the budget."""
        deliver = self._loop.call_soon_threadsafe
        while self._room.acquire(timeout=READ_PARK_S):
            if self._stopped:
                return
            if self._demand:
                self._demand = False
                budgeted = False
            elif self._budget.take():
                budgeted = True
            else:  # read ahead of the client only with a place: wait for demand instead
                self._room.release()
                break
            try:
                chunk = next(self._chunks, None)
            except Exception as exc:  # e.g. CorruptBlobError at the end of the stored data
                deliver(self._arrived, _Broken(exc), budgeted)
                return
            deliver(self._arrived, chunk, budgeted)
            if chunk is None:
                return
        deliver(self._parked)

    def _arrived(self, item: bytes | _Broken | None, budgeted: bool) -> None:
        self._waiting += 1
        self._ended = self._ended or not isinstance(item, bytes)
        self._ready.put_nowait((item, budgeted))

    def _parked(self) -> None:
        # Demand that arrived while the thread was giving up needs a new one.
        if not self._stopped and not self._ended and self._demand:
            self._start()
        else:
            self._reader = None

    async def get(self) -> bytes | None:
        """The next chunk, or None after the last.

        Raises:
            Exception: what reading the stored data raised.
        """
        if self._ready.empty():
            self._demand = True
            if self._reader is None and not self._ended:
                self._start()
        item, budgeted = await self._ready.get()
        if budgeted:
            self._budget.give()
        self._waiting -= 1
        self._room.release()
        if self._reader is None and not self._ended:
            self._start()  # reads ahead if the budget has a place, else returns at once
        if isinstance(item, _Broken):
            raise item.error
        return item

    async def close(self) -> None:
        """Stop reading (the client may have gone away), release the stored data and give
        back the budget of the chunks read ahead and never taken."""
        self._stopped = True
        self._room.release()
        while (reader := self._reader) is not None and not reader.done():
            with contextlib.suppress(BaseException):
                await asyncio.shield(reader)
            if self._reader is reader:
                break
        try:
            await self._offload(_close_quietly, self._chunks)
        finally:
            # What the reading thread delivered has arrived: its callbacks ran before the
            # thread's future was done.
            while not self._ready.empty():
                if self._ready.get_nowait()[1]:
                    self._budget.give()


def _close_quietly(chunks: Generator[bytes, None, None]) -> None:
    """Release the stored data of a stream (its reading thread has returned)."""
    with contextlib.suppress(ValueError):  # "generator already executing": it ends on its own
        chunks.close()


@dataclass(frozen=True, slots=True)
class _Broken:
    error: Exception


async def _next_or_none(iterator: AsyncIterator[Any]) -> Any:
    try:
        return await iterator.__anext__()
    except StopAsyncIteration:
        return None


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
            outbox = _Outbox(messages, self._offload, self._read_ahead)
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
        first = await _next_or_none(request_iterator)
        if first is None:
            raise InvalidRequestError("WriteBlob stream carried no chunk")
        ref = blob_ref(first.hash_function, first.digest)
        encoding = encoding_of(first.compression)
        inbox = _Inbox(request_iterator, first, self._idle_timeout)

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
