"""Shared pieces of ``bench_cache_service``: server processes, blob data, echo method names.

Spec coverage: none (benchmark support). Starts servers as separate processes, parses their
``listening on HOST:PORT`` line, stops them by PID, reads peak RSS, and generates the
deterministic blob bytes both the client and the raw echo server stream.
Out of scope: measuring (``bench_cache_service``, ``_svc_blobclient``).
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
VENV_BIN = Path(sys.executable).parent
MIB = 1 << 20
CHUNK = 1 * MIB

#: Echo server methods (generic handlers, no proto service): the raw-gRPC baselines.
ECHO_SET_REPLY = "/bench.Echo/SetReply"
ECHO_GET_MANIFEST = "/bench.Echo/GetManifest"
ECHO_UPLOAD = "/bench.Echo/Upload"
ECHO_DOWNLOAD = "/bench.Echo/Download"

#: Every server this process started, so the bench can stop them all by PID on any exit.
STARTED: list[ServerProcess] = []

_LISTENING = re.compile(r"listening on (\S+)")
#: Incompressible pool the blob chunks are cut from; 16 MiB apart > zstd level 3's window.
_POOL_SIZE = 16 * MIB
_STRIDE = MIB + 7


def blob_pool(seed: int) -> bytes:
    """The random bytes blob ``seed`` is cut from (one extra chunk so any slice is whole)."""
    return random.Random(seed).randbytes(_POOL_SIZE + CHUNK)


def blob_chunks(pool: bytes, size: int, chunk: int = CHUNK) -> Iterator[bytes]:
    """The bytes of a ``size``-byte blob, ``chunk`` bytes at a time (incompressible)."""
    sent = 0
    index = 0
    while sent < size:
        n = min(chunk, size - sent)
        offset = (index * _STRIDE) % _POOL_SIZE
        yield pool[offset : offset + n]
        sent += n
        index += 1


@dataclass
class ServerProcess:
    """A server started as its own process; ``address`` is the ``listening on`` address."""

    process: subprocess.Popen[bytes]
    address: str
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu_seconds(self) -> float:
        """User + system CPU time the process has used so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_rss_mib(self) -> float:
        """VmHWM of the process (its peak resident set) in MiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmHWM in /proc status")

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM by PID, then SIGKILL after ``grace_s``."""
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self.process.wait()


def start_server(
    argv: Sequence[str], *, log: Path, env: dict[str, str] | None = None, timeout_s: float = 60
) -> ServerProcess:
    """Start ``argv`` with stderr into ``log``; wait for its ``listening on`` line."""
    with open(log, "wb") as sink:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=sink,
            env=env,
            cwd=ROOT,
        )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        match = _LISTENING.search(log.read_text(errors="replace"))
        if match:
            server = ServerProcess(process=process, address=match.group(1), log=log)
            STARTED.append(server)
            return server
        if process.poll() is not None:
            raise RuntimeError(f"{argv[0]} exited with {process.returncode}: {log.read_text()}")
        time.sleep(0.02)
    ServerProcess(process=process, address="", log=log).stop()
    raise RuntimeError(f"{argv[0]} printed no 'listening on' line within {timeout_s} s")


def stop_all() -> None:
    """Stop every server still running (by PID)."""
    while STARTED:
        STARTED.pop().stop()


def start_cache_service(
    *extra: str, storage: str, log: Path, env: dict[str, str] | None = None
) -> ServerProcess:
    """The real ``haz-cache-service`` console script on a free loopback port."""
    argv = [
        str(VENV_BIN / "haz-cache-service"),
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--storage",
        storage,
        *extra,
    ]
    return start_server(argv, log=log, env=env)


def start_echo(log: Path) -> ServerProcess:
    """The minimal grpc.aio echo server of :mod:`bench._svc_echo`."""
    return start_server([sys.executable, str(BENCH / "_svc_echo.py")], log=log)


def channel_options() -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", 64 * MIB),
        ("grpc.max_send_message_length", 64 * MIB),
    ]
