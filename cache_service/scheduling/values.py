"""The values the execution queue exchanges with clients and workers (no protobuf).

Spec coverage:
* RX-003 — :class:`LeaseGrant`, :class:`CancelLease`, :class:`WorkResult`, :class:`ReleaseReason`.
* RX-005 — :class:`LogChunk` (offset within the stream of the current attempt).
* RX-006 — :class:`Subscription`: every submitter of one execution reads the same updates.
* RX-007 — :class:`Cancelled` says whether the execution itself stopped.
Out of scope: ordering and leasing (:mod:`.inprocess`), the wire (the servicers).
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import AsyncIterator
from dataclasses import dataclass

from hazremote.remote.action import Platform, RemoteAction
from hazremote.remote.updates import (
    Cancelled,
    Completed,
    ExecutionUpdate,
    Failed,
    FailureReason,
    Leased,
    LogChunk,
    LogStream,
    Queued,
)

__all__ = [
    "CancelLease",
    "Cancelled",
    "Completed",
    "ExecutionUpdate",
    "Failed",
    "FailureReason",
    "LeaseGrant",
    "Leased",
    "LogChunk",
    "LogStream",
    "PoolStatus",
    "Queued",
    "ReleaseReason",
    "ServerMessage",
    "Subscription",
    "WorkResult",
    "WorkerLink",
]


class ReleaseReason(enum.Enum):
    """Why a worker hands a lease back."""

    DRAINING = "draining"  # requeued; not a lost attempt
    REJECTED = "rejected"  # the execution fails with FailureReason.REJECTED
    CANCELLED = "cancelled"  # stopped after a CancelLease


_TERMINAL = (Completed, Failed, Cancelled)


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkResult:
    """What a worker reports when a leased action ended."""

    exit_code: int
    manifest_json: bytes | None = None  # set when the worker published the manifest
    duration_ms: int = 0
    timed_out: bool = False
    failure_message: str = ""  # non-empty: the worker could not run it (WORKER_ERROR)


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseGrant:
    lease_id: str
    execution_id: str
    action: RemoteAction
    lease_duration_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelLease:
    """Stop the lease's process (RX-007) and never publish its result."""

    lease_id: str


ServerMessage = LeaseGrant | CancelLease


@dataclass(frozen=True, slots=True, kw_only=True)
class PoolStatus:
    """Live workers sharing one platform property set (for ``ServerCapabilities``)."""

    platform: Platform
    workers: int
    slots: int
    free_slots: int


class Subscription:
    """One submitter's view of an execution: its updates in order, ending after the terminal
    one (:class:`Completed`, :class:`Failed` or :class:`Cancelled`).

    The queue writes with :meth:`push`; a servicer reads with ``async for``. Buffering is
    unbounded here because the queue bounds what it replays (the retained log tail) and a
    live reader drains as fast as the worker writes.
    """

    def __init__(self, *, execution_id: str, namespace: str, submitter: str) -> None:
        self.execution_id = execution_id
        self.namespace = namespace
        self.submitter = submitter
        self._updates: asyncio.Queue[ExecutionUpdate | None] = asyncio.Queue()
        self._ended = False

    @property
    def ended(self) -> bool:
        """True once the terminal update was pushed, or the subscription was closed."""
        return self._ended

    def push(self, update: ExecutionUpdate) -> None:
        if self._ended:
            return
        self._updates.put_nowait(update)
        if isinstance(update, _TERMINAL):
            self._ended = True
            self._updates.put_nowait(None)

    def close(self) -> None:
        """Stop reading (a dropped stream); the execution is unaffected."""
        if not self._ended:
            self._ended = True
            self._updates.put_nowait(None)

    def pending(self) -> list[ExecutionUpdate]:
        """The updates pushed and not yet read, without waiting."""
        items: list[ExecutionUpdate] = []
        while not self._updates.empty():
            item = self._updates.get_nowait()
            if item is None:
                self._updates.put_nowait(None)  # keep the end marker for a reader
                break
            items.append(item)
        return items

    def __aiter__(self) -> AsyncIterator[ExecutionUpdate]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[ExecutionUpdate]:
        while True:
            item = await self._updates.get()
            if item is None:
                self._updates.put_nowait(None)
                return
            yield item


class WorkerLink:
    """One connected worker session: the messages the queue sends it (leases, cancels).

    A reconnecting worker gets a new link; messages from a superseded link are refused.
    """

    def __init__(self, *, worker_id: str, slots: int, platform: Platform) -> None:
        self.worker_id = worker_id
        self.slots = slots
        self.platform = platform
        self._messages: asyncio.Queue[ServerMessage | None] = asyncio.Queue()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def send(self, message: ServerMessage) -> None:
        if not self._closed:
            self._messages.put_nowait(message)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._messages.put_nowait(None)

    def pending(self) -> list[ServerMessage]:
        """The messages sent and not yet read, without waiting."""
        items: list[ServerMessage] = []
        while not self._messages.empty():
            item = self._messages.get_nowait()
            if item is None:
                self._messages.put_nowait(None)
                break
            items.append(item)
        return items

    def __aiter__(self) -> AsyncIterator[ServerMessage]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[ServerMessage]:
        while True:
            item = await self._messages.get()
            if item is None:
                self._messages.put_nowait(None)
                return
            yield item
