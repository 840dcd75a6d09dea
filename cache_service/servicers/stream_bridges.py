"""Bridges between a blob stream on the event loop and the storage thread serving it.

Spec coverage:
* RC-006 — bounded memory: a WriteBlob is received up to :data:`RECEIVE_AHEAD` messages ahead
  of its storage thread (:class:`Inbox`); a ReadBlob is read up to :data:`READ_AHEAD` chunks
  ahead of its client (:class:`Outbox`), from one server-wide :class:`ReadAheadBudget`.
* Issue 13 — a silent WriteBlob client is :class:`~cache_service.errors.ClientIdleError`; a
  reader that stops taking chunks gives its storage thread back (:data:`READ_PARK_S`).
Out of scope: what is stored or read (:mod:`cache_service.cas`).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import AsyncIterator, Generator
from dataclasses import dataclass
from typing import Any

from cache_service.errors import ClientIdleError, InvalidRequestError
from cache_service.offload import Offload
from hazremote.wire.haz.remote.v1 import cache_pb2

__all__ = [
    "READ_AHEAD",
    "READ_AHEAD_BUDGET",
    "READ_PARK_S",
    "RECEIVE_AHEAD",
    "Inbox",
    "Outbox",
    "ReadAheadBudget",
    "next_or_none",
]

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


class Inbox:
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
                message = await next_or_none(self._requests)
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


class Outbox:
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


async def next_or_none(iterator: AsyncIterator[Any]) -> Any:
    try:
        return await iterator.__anext__()
    except StopAsyncIteration:
        return None
