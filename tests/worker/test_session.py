"""The gRPC session adapter over a real in-process WorkerSession server (RX-003, SEC-002)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import pytest

from hazremote.wire.haz.remote.v1 import execution_pb2, execution_pb2_grpc
from worker.session import SessionLost, grpc_sessions

SM = execution_pb2.ServerMessage
WM = execution_pb2.WorkerMessage


class Servicer(execution_pb2_grpc.WorkerSessionServicer):  # type: ignore[misc]  # untyped stub
    def __init__(self) -> None:
        self.metadata: dict[str, str] = {}
        self.received: list[WM] = []

    async def Connect(self, request_iterator: AsyncIterator[WM], context: Any) -> AsyncIterator[SM]:
        self.metadata = dict(context.invocation_metadata())
        async for message in request_iterator:
            self.received.append(message)
            if message.WhichOneof("message") == "hello":
                yield SM(welcome=SM.Welcome(heartbeat_interval_ms=1000))
            else:
                return


def test_a_grpc_session_carries_the_token_and_both_directions() -> None:
    async def main() -> None:
        servicer = Servicer()
        server = grpc.aio.server()
        execution_pb2_grpc.add_WorkerSessionServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        try:
            session = await grpc_sessions(lambda: channel, token="tok")()
            await session.send(WM(hello=WM.Hello(worker_id="w1", slots=1)))
            welcome = await session.receive()
            assert welcome is not None
            assert welcome.welcome.heartbeat_interval_ms == 1000
            await session.send(WM(heartbeat=WM.Heartbeat()))
            assert await session.receive() is None  # the service ended the stream
            await session.close()
            with pytest.raises(SessionLost):
                await session.send(WM(heartbeat=WM.Heartbeat()))
            assert servicer.metadata["authorization"] == "Bearer tok"
            assert [m.WhichOneof("message") for m in servicer.received] == ["hello", "heartbeat"]
        finally:
            await channel.close()
            await server.stop(None)

    asyncio.run(main())


def test_an_unreachable_service_is_a_lost_session() -> None:
    async def main() -> None:
        channel = grpc.aio.insecure_channel("127.0.0.1:1")
        try:
            session = await grpc_sessions(lambda: channel, token=None)()
            await session.send(WM(hello=WM.Hello(worker_id="w1", slots=1)))
            with pytest.raises(SessionLost):
                await asyncio.wait_for(session.receive(), 60)
            await session.close()
        finally:
            await channel.close()

    asyncio.run(main())
