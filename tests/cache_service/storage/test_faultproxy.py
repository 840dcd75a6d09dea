"""The fault-injection proxy itself (tests/support/faultproxy.py): each fault does what it says.

RC-003 tests rely on it to turn "remote unavailable / slow / corrupt" into real socket events.
"""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Iterator

import pytest

from tests.support.faultproxy import (
    BlackHole,
    CorruptAt,
    Direction,
    FaultProxy,
    Latency,
    Pass,
    ResetAfter,
)


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.server.connections += 1  # type: ignore[attr-defined]
        while data := self.request.recv(65536):
            self.request.sendall(data)


class _EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    connections = 0


@pytest.fixture
def echo() -> Iterator[_EchoServer]:
    server = _EchoServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def proxy(echo: _EchoServer) -> Iterator[FaultProxy]:
    with FaultProxy(target_host="127.0.0.1", target_port=echo.server_address[1]) as running:
        yield running


def _connect(proxy: FaultProxy, timeout: float = 5.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proxy.port), timeout=timeout)


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _drain_into(sock: socket.socket, received: bytearray) -> None:
    while chunk := sock.recv(65536):
        received += chunk


def test_pass_forwards_both_directions_untouched(proxy: FaultProxy) -> None:
    """Pass: the echo comes back byte for byte."""
    payload = bytes(range(256)) * 1000
    with _connect(proxy) as sock:
        sock.sendall(payload)
        assert _recv_exactly(sock, len(payload)) == payload


def test_latency_delays_but_delivers(proxy: FaultProxy) -> None:
    """Latency: nothing arrives within a short wait, then everything arrives intact."""
    proxy.fault = Latency(seconds=0.5)
    with _connect(proxy) as sock:
        sock.sendall(b"slow")
        sock.settimeout(0.1)
        with pytest.raises(TimeoutError):
            sock.recv(4)
        sock.settimeout(10)
        assert _recv_exactly(sock, 4) == b"slow"


def test_black_hole_accepts_but_never_answers_or_forwards(
    proxy: FaultProxy, echo: _EchoServer
) -> None:
    """BlackHole: the connect succeeds, the target never sees it, no answer ever comes."""
    proxy.fault = BlackHole()
    with _connect(proxy, timeout=0.5) as sock:
        sock.sendall(b"anyone there?")
        with pytest.raises(TimeoutError):
            sock.recv(1)
    assert proxy.connections == 1
    assert echo.connections == 0


def test_reset_after_n_bytes_delivers_n_then_resets(proxy: FaultProxy) -> None:
    """ResetAfter: exactly n bytes come back, then the connection is reset (RST)."""
    proxy.fault = ResetAfter(n=1000, direction=Direction.DOWNSTREAM)
    with _connect(proxy) as sock:
        sock.sendall(b"z" * 5000)
        received = bytearray()
        with pytest.raises(ConnectionResetError):
            _drain_into(sock, received)
        assert received == b"z" * 1000


def test_corrupt_at_flips_exactly_one_byte(proxy: FaultProxy) -> None:
    """CorruptAt: the byte at the offset is inverted, every other byte is intact."""
    proxy.fault = CorruptAt(offset=70_000, direction=Direction.DOWNSTREAM)
    payload = b"a" * 100_000
    with _connect(proxy) as sock:
        sock.sendall(payload)
        received = _recv_exactly(sock, len(payload))
    expected = bytearray(payload)
    expected[70_000] ^= 0xFF
    assert received == bytes(expected)


def test_fault_can_be_changed_at_runtime(proxy: FaultProxy) -> None:
    """Faults apply per chunk: a connection corrupted earlier works again after Pass."""
    with _connect(proxy) as sock:
        proxy.fault = CorruptAt(offset=0, direction=Direction.UPSTREAM)
        sock.sendall(b"A")
        assert _recv_exactly(sock, 1) == bytes([ord("A") ^ 0xFF])
        proxy.fault = Pass()
        sock.sendall(b"B")
        assert _recv_exactly(sock, 1) == b"B"
