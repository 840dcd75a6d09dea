"""The ``haz-cache-service`` command: a real process end to end, exit codes, and config
precedence (§5, SVC-003, SVC-005, EXEC-021)."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import pytest

from cache_service.config import Address, ServiceConfigError, default_storage_url, resolve_config
from hazremote.wire.haz.remote.v1 import cache_pb2, cache_pb2_grpc
from tests.cache_service.server.serverkit import BLAKE3, digest_of, make_manifest

COMMAND = str(Path(sys.executable).parent / "haz-cache-service")


_EXEC_WITH_LIMITS = (
    "import ast, os, resource, sys; "
    "resource.setrlimit(resource.RLIMIT_NOFILE, ast.literal_eval(sys.argv[1])); "
    "os.execv(sys.argv[2], sys.argv[2:])"
)


class Service:
    """A running ``haz-cache-service`` process and its stderr lines."""

    def __init__(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        open_files: tuple[int, int] | None = None,
    ) -> None:
        """Start the service; ``open_files`` sets its soft and hard open-file limits first
        (through an exec, as ``preexec_fn`` is unsafe with threads)."""
        command = [COMMAND, *args]
        if open_files is not None:
            command = [sys.executable, "-c", _EXEC_WITH_LIMITS, repr(open_files), *command]
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_for(self, prefix: str, timeout: float = 30) -> str:
        while True:
            line = self.lines.get(timeout=timeout)
            if line is None:
                raise AssertionError(f"process ended before {prefix!r}: {self.seen}")
            self.seen.append(line)
            if line.startswith(prefix):
                return line

    def rest(self) -> list[str]:
        while (line := self.lines.get(timeout=30)) is not None:
            self.seen.append(line)
        return self.seen


@pytest.fixture
def clean_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAZ_CACHE_")}
    env["XDG_DATA_HOME"] = str(tmp_path / "xdg")
    return env


def test_service_process_round_trip_and_sigterm_exits_zero(
    tmp_path: Path, clean_env: dict[str, str]
) -> None:
    """§5/SVC-005: port 0, one `listening on` line, a real round trip, SIGTERM → exit 0."""
    service = Service(
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--storage",
        str(tmp_path / "store"),
        "--log-format",
        "json",
        env=clean_env,
    )
    try:
        line = service.wait_for("listening on ")
        address = line.removeprefix("listening on ")
        assert address.startswith("127.0.0.1:")
        assert not address.endswith(":0")
        with grpc.insecure_channel(address) as channel:
            content = cache_pb2_grpc.ContentStoreStub(channel)
            out = b"built\n"
            reply = content.BatchUpdateBlobs(
                cache_pb2.BatchUpdateBlobsRequest(
                    hash_function=BLAKE3,
                    items=[
                        cache_pb2.BatchUpdateBlobsRequest.Item(digest=digest_of(data), data=data)
                        for data in (out, b"")
                    ],
                )
            )
            assert [i.status_code for i in reply.items] == [0, 0]
            manifest = make_manifest(key_label="e2e", stdout=out)
            manifests = cache_pb2_grpc.ManifestStoreStub(channel)
            put = cache_pb2.PutManifestRequest(
                namespace="main",
                hash_function=BLAKE3,
                key=manifest.key.raw,
                manifest_json=manifest.to_json(),
            )
            assert manifests.PutManifest(put).created is True
            got = manifests.GetManifest(
                cache_pb2.GetManifestRequest(
                    namespace="main", hash_function=BLAKE3, key=manifest.key.raw
                )
            )
            assert got.found
        assert (tmp_path / "store").is_dir()
        service.proc.send_signal(signal.SIGTERM)
        assert service.proc.wait(timeout=30) == 0
    finally:
        if service.proc.poll() is None:
            service.proc.kill()
    lines = service.rest()
    assert sum(1 for entry in lines if entry.startswith("listening on ")) == 1
    events = [json.loads(entry) for entry in lines if entry.startswith("{")]
    access = [e for e in events if e.get("event") == "rpc"]
    put_events = [e for e in access if e["method"] == "ManifestStore/PutManifest"]
    assert len(put_events) == 1, "one access event per RPC (SVC-004)"
    assert put_events[0]["code"] == "OK"
    assert put_events[0]["namespace"] == "main"
    assert {"duration_ms", "bytes_in", "bytes_out", "peer"} <= put_events[0].keys()


def test_port_taken_exits_one(clean_env: dict[str, str], tmp_path: Path) -> None:
    """EXEC-021: failure to bind is a runtime failure to start → exit 1."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [COMMAND, "--listen", f"127.0.0.1:{port}", "--storage", str(tmp_path / "s")],
            env=clean_env,
            capture_output=True,
            check=False,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert "cannot listen" in result.stderr


@pytest.mark.parametrize(
    "case",
    [
        (["--max-blob-size", "lots"], {}, None, "--max-blob-size"),
        ([], {"HAZ_CACHE_LISTEN": "nowhere"}, None, "HAZ_CACHE_LISTEN"),
        (["--config", "CFG"], {}, "listen: 127.0.0.1:0\nbogus: 1\n", "unknown key 'bogus'"),
        (["--config", "CFG"], {}, "limits:\n  max_batch_items: 0\n", "limits.max_batch_items"),
        (
            ["--storage", "ftp://x/y", "--listen", "127.0.0.1:0"],
            {},
            None,
            "unsupported storage URL",
        ),
        (["--no-such-flag"], {}, None, "unrecognized arguments"),
        (["gc", "--max-size", "huge"], {}, None, "invalid size"),
        (["admin"], {}, None, "required: ACTION"),
    ],
)
def test_bad_configuration_exits_two(
    tmp_path: Path,
    clean_env: dict[str, str],
    case: tuple[list[str], dict[str, str], str | None, str],
) -> None:
    """EXEC-021: bad flags, variables, files and unknown keys → exit 2 naming the problem."""
    args, env, file_text, message = case
    config = tmp_path / "cache.yaml"
    if file_text is not None:
        config.write_text(file_text)
    argv = [str(config) if a == "CFG" else a for a in args]
    result = subprocess.run(
        [COMMAND, *argv],
        env={**clean_env, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr


def test_precedence_flag_over_env_over_file_over_default(tmp_path: Path) -> None:
    """SVC-003: each item resolves flag > HAZ_CACHE_* > file > default, independently."""
    config = tmp_path / "cache.yaml"
    config.write_text(
        "listen: 10.0.0.1:1\nstorage: /from/file\ns3_region: file-region\n"
        "limits:\n  max_batch_items: 7\n  max_blob_size: 1MiB\n"
    )
    resolved = resolve_config(
        flags={"config": str(config), "listen": "127.0.0.1:0", "max_batch_items": None},
        env={
            "HAZ_CACHE_LISTEN": "10.0.0.2:2",
            "HAZ_CACHE_STORAGE": "/from/env",
            "HAZ_CACHE_MAX_BATCH_ITEMS": "9",
        },
    )
    assert resolved.listen == Address(host="127.0.0.1", port=0)  # flag beats env and file
    assert resolved.storage == "/from/env"  # env beats file
    assert resolved.s3_region == "file-region"  # file beats default
    assert resolved.limits.max_batch_items == 9
    assert resolved.limits.max_blob_size == 1 << 20
    assert resolved.limits.max_concurrent_streams == 256  # default
    assert (
        resolve_config(flags={}, env={"XDG_DATA_HOME": "/xdg"}).storage == "file:///xdg/haz/store"
    )
    assert default_storage_url({}).endswith("/.local/share/haz/store")


def test_config_file_from_environment_and_limit_consistency(tmp_path: Path) -> None:
    """HAZ_CACHE_CONFIG names the file; a batch limit above the message limit is refused."""
    config = tmp_path / "cache.yaml"
    config.write_text("limits:\n  max_batch_total_size: 16MiB\n  max_message_size: 4MiB\n")
    with pytest.raises(ServiceConfigError, match="max_message_size"):
        resolve_config(flags={}, env={"HAZ_CACHE_CONFIG": str(config)})
    config.write_text("log_level: loud\n")
    with pytest.raises(ServiceConfigError, match="log_level"):
        resolve_config(flags={}, env={"HAZ_CACHE_CONFIG": str(config)})


def test_env_beats_file_in_a_real_process(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """SVC-003 end to end: HAZ_CACHE_LISTEN overrides the file's listen address."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "cache.yaml"
        config.write_text(f"listen: 127.0.0.1:{port}\nstorage: {tmp_path / 'store'}\n")
        service = Service(
            "--config", str(config), env={**clean_env, "HAZ_CACHE_LISTEN": "127.0.0.1:0"}
        )
        try:
            line = service.wait_for("listening on ")
            assert not line.endswith(f":{port}")
            service.proc.send_signal(signal.SIGINT)
            assert service.proc.wait(timeout=30) == 0
        finally:
            if service.proc.poll() is None:
                service.proc.kill()
