"""The worker's session with the service: a small port and its gRPC adapter over
``WorkerSession.Connect``.

Spec coverage:
* RX-003 — one bidirectional stream per worker: it sends ``WorkerMessage``\\ s, it receives
  ``ServerMessage``\\ s until the stream ends.
* SEC-002 — the worker's token goes with the call as ``authorization: Bearer <token>``.
* SEC-005 — the channel is :func:`hazremote.remote.channel.aio_channel`'s (TLS for grpcs://).
Out of scope: what the messages mean (:mod:`worker.agent`), reconnecting (the agent's).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Protocol

import grpc
import grpc.aio

from hazremote.wire.haz.remote.v1 import execution_pb2, execution_pb2_grpc

__all__ = ["GrpcSession", "Session", "SessionFactory", "SessionLost", "grpc_sessions"]

WorkerMessage = execution_pb2.WorkerMessage
ServerMessage = execution_pb2.ServerMessage


class SessionLost(Exception):
    """The stream could not be opened or broke; the message says why."""


class Session(Protocol):
    """Port: one open stream to the service."""

    async def send(self, message: WorkerMessage) -> None:
        """Queue ``message`` for the service.

        Raises:
            SessionLost: the stream is gone.
        """
        ...

    async def receive(self) -> ServerMessage | None:
        """The next message, or None when the service ended the stream.

        Raises:
            SessionLost: the stream broke.
        """
        ...

    async def close(self) -> None:
        """End the stream (idempotent)."""
        ...


#: Opens a new session (raises :class:`SessionLost` when it cannot).
SessionFactory = Callable[[], Awaitable[Session]]

_END: Any = object()


class GrpcSession:
    """A :class:`Session` over one ``WorkerSession.Connect`` call."""

    def __init__(self, channel: grpc.aio.Channel, *, metadata: Sequence[tuple[str, str]]) -> None:
        self._outgoing: asyncio.Queue[Any] = asyncio.Queue()
        stub = execution_pb2_grpc.WorkerSessionStub(channel)
        self._call: Any = stub.Connect(self._requests(), metadata=tuple(metadata))
        self._closed = False

    async def _requests(self) -> AsyncIterator[WorkerMessage]:
        while True:
            message = await self._outgoing.get()
            if message is _END:
                return
            yield message

    async def send(self, message: WorkerMessage) -> None:
        if self._closed or self._call.done():
            raise SessionLost("the session stream has ended")
        self._outgoing.put_nowait(message)

    async def receive(self) -> ServerMessage | None:
        try:
            message = await self._call.read()
        except grpc.aio.AioRpcError as error:
            raise SessionLost(
                f"{error.code().name}: {error.details() or ''}".rstrip(": ")
            ) from None
        if message is grpc.aio.EOF:
            return None
        result: ServerMessage = message
        return result

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._outgoing.put_nowait(_END)
        self._call.cancel()


def grpc_sessions(channel: Callable[[], grpc.aio.Channel], *, token: str | None) -> SessionFactory:
    """A :data:`SessionFactory` opening ``Connect`` calls on ``channel()``."""
    metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {token}"),) if token else ()

    async def connect() -> Session:
        try:
            return GrpcSession(channel(), metadata=metadata)
        except grpc.RpcError as error:
            raise SessionLost(str(error)) from None

    return connect
