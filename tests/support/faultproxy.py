"""A fault-injection TCP proxy for tests (RC-003: remote failures must be bounded, not hangs).

:class:`FaultProxy` listens on 127.0.0.1, forwards every connection to a target, and applies
the fault currently set — changeable at any time from the test's thread:

* :class:`Pass` — forward untouched;
* :class:`Latency` — delay every chunk by ``seconds`` in each direction;
* :class:`BlackHole` — accept connections but never forward or answer (data is swallowed);
* :class:`ResetAfter` — forward ``n`` bytes in one direction, then reset both sides (RST);
* :class:`CorruptAt` — flip the byte at stream offset ``offset`` of one direction.

It runs an asyncio loop in a background thread, so synchronous tests (boto3, grpc) can use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import socket
import struct
import threading
from dataclasses import dataclass
from types import TracebackType

__all__ = [
    "BlackHole",
    "CorruptAt",
    "Direction",
    "Fault",
    "FaultProxy",
    "Latency",
    "Pass",
    "ResetAfter",
]

_CHUNK = 64 * 1024


class Direction(enum.Enum):
    UPSTREAM = "upstream"  # client → target
    DOWNSTREAM = "downstream"  # target → client


@dataclass(frozen=True, slots=True, kw_only=True)
class Pass:
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class Latency:
    seconds: float


@dataclass(frozen=True, slots=True, kw_only=True)
class BlackHole:
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class ResetAfter:
    n: int
    direction: Direction = Direction.DOWNSTREAM


@dataclass(frozen=True, slots=True, kw_only=True)
class CorruptAt:
    offset: int
    direction: Direction = Direction.DOWNSTREAM


Fault = Pass | Latency | BlackHole | ResetAfter | CorruptAt


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0) rather than a graceful FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultProxy:
    """A TCP proxy to ``target_host:target_port`` with a runtime-settable :data:`Fault`.

    Usage::

        with FaultProxy(target_host="127.0.0.1", target_port=port) as proxy:
            proxy.fault = BlackHole()
            connect to ("127.0.0.1", proxy.port) ...
    """

    def __init__(self, *, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self.fault: Fault = Pass()
        self.port = 0
        self.connections = 0  # accepted client connections
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(timeout=10)
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), timeout=2)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            if isinstance(self.fault, BlackHole):
                while await reader.read(_CHUNK):
                    pass  # swallow; never answer
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(*self._target)
            except OSError:
                _reset(writer)
                return
            self._writers.add(up_writer)
            try:
                await asyncio.gather(
                    self._pump(reader, up_writer, Direction.UPSTREAM, writer),
                    self._pump(up_reader, writer, Direction.DOWNSTREAM, up_writer),
                    return_exceptions=True,
                )
            finally:
                self._writers.discard(up_writer)
                up_writer.transport.abort()
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            writer.transport.abort()

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        direction: Direction,
        other: asyncio.StreamWriter,
    ) -> None:
        offset = 0
        while True:
            data = await reader.read(_CHUNK)
            if not data:
                with contextlib.suppress(OSError, RuntimeError):
                    if writer.can_write_eof():
                        writer.write_eof()
                return
            fault = self.fault
            if isinstance(fault, BlackHole):
                continue
            if isinstance(fault, Latency):
                await asyncio.sleep(fault.seconds)
            elif isinstance(fault, ResetAfter) and fault.direction is direction:
                if offset + len(data) >= fault.n:
                    writer.write(data[: max(0, fault.n - offset)])
                    with contextlib.suppress(ConnectionError):
                        await writer.drain()
                    _reset(writer)
                    _reset(other)
                    return
            elif (
                isinstance(fault, CorruptAt)
                and fault.direction is direction
                and offset <= fault.offset < offset + len(data)
            ):
                mutable = bytearray(data)
                mutable[fault.offset - offset] ^= 0xFF
                data = bytes(mutable)
            writer.write(data)
            await writer.drain()
            offset += len(data)
