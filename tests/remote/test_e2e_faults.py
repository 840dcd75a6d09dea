"""``haz run`` against a real ``haz-cache-service`` through a fault-injecting TCP proxy.

Chains: ``haz`` → FaultProxy → ``haz-cache-service`` (disk store), and ``haz`` →
``haz-cache-service`` → FaultProxy → SeaweedFS (S3). Whatever the fault, the run succeeds
locally with correct outputs and at most one warning. (A service killed mid-run is covered
by ``test_run_cache_service.py``.)

Spec coverage: RC-003 (a remote that never answers, resets mid-transfer, or whose storage
stalls costs bounded deadlines and one warning, never the run; a slow link inside the
deadlines still gets hits), RC-004 (corrupt blob bytes —
flipped on the wire or on the server's disk — are caught by digest: the task runs locally,
``fresh``), RC-001 (outputs restored or rebuilt are byte-identical either way).
"""

from __future__ import annotations

import random
import stat
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hazremote.domain.digest import digest_bytes
from hazremote.domain.model import HashName
from tests.remote.test_run_remote import FAST, snapshot, warning_lines
from tests.remote.test_run_remote import files as small_files
from tests.run.conftest import HazRunner, WorkspaceMaker, py
from tests.support.faultproxy import (
    BlackHole,
    CorruptAt,
    Direction,
    FaultProxy,
    Latency,
    ResetAfter,
)
from tests.support.fixtures import (
    BUCKET,
    ServiceProcess,
    s3_client_env,
    seaweed,  # noqa: F401 - the shared session fixture
    service_process,
)
from tests.support.seaweedfs import REGION, SeaweedS3

pytestmark = pytest.mark.e2e

#: Short deadlines, and a short wait for uploads at the end of a run against a dead remote:
#: for the tests where the remote never answers (only deadlines can end those calls).
SHORT = FAST + ",upload_drain_s=2"
#: Generous deadlines where the fault ends calls by itself (reset, corrupt bytes): a loaded
#: CI machine must not turn a healthy call into a deadline miss and change the outcome.
PATIENT = "connect_s=10,lookup_s=10,transfer_s=30,upload_drain_s=30,breaker_failures=2"
#: The size of the incompressible output: large enough that any byte offset past the first
#: few KiB of a download lies inside its blob payload.
BIG = 2 << 20
BIG_SEED = 5
#: Bound of every ``haz`` run here: a hang fails the test instead of blocking the suite.
RUN_TIMEOUT_S = 60

BUILD = py(
    "import random, sys, pathlib;"
    "out = pathlib.Path('dist'); out.mkdir(exist_ok=True);"
    f"(out / 'blob.bin').write_bytes(random.Random({BIG_SEED}).randbytes({BIG}));"
    "(out / 'tool.sh').write_text('#!/bin/sh\\necho tool\\n');"
    "(out / 'tool.sh').chmod(0o755);"
    "print('lib built');"
    "sys.stderr.write('lib says hi\\n')"
)
USE = py(
    "import pathlib;"
    "data = pathlib.Path('../lib/dist/blob.bin').read_bytes();"
    "pathlib.Path('size.txt').write_text(str(len(data)));"
    "print('app used', len(data))"
)
OUTPUTS = ("lib/dist/blob.bin", "lib/dist/tool.sh", "app/size.txt")


def files() -> dict[str, str]:
    """``lib:build`` writes a 2 MiB incompressible blob (its stored form is ~2 MiB too) and
    an executable; ``app:build`` reads the blob."""
    return {
        ".haz/workspace.yml": "projects: [lib, app]\n",
        "lib/haz.yml": (
            "tasks:\n"
            "  build:\n"
            f"    command: {BUILD}\n"
            "    inputs: [src/**]\n"
            "    outputs: [dist/**]\n"
        ),
        "lib/src/seed.txt": "seed\n",
        "app/haz.yml": (
            "tasks:\n"
            "  build:\n"
            f"    command: {USE}\n"
            "    inputs: [/lib/dist/blob.bin]\n"
            "    outputs: [size.txt]\n"
            "    deps: [lib:build]\n"
        ),
    }


def expected_outputs() -> dict[str, tuple[bytes, int]]:
    big = random.Random(BIG_SEED).randbytes(BIG)
    return {
        "lib/dist/blob.bin": (big, 0o644),
        "lib/dist/tool.sh": (b"#!/bin/sh\necho tool\n", 0o755),
        "app/size.txt": (str(BIG).encode(), 0o644),
    }


def outputs(root: Path) -> dict[str, tuple[bytes, int]]:
    found = {}
    for rel in OUTPUTS:
        path = root / rel
        found[rel] = (path.read_bytes(), stat.S_IMODE(path.stat().st_mode) & 0o755)
    return found


def env_for(url: str, timeouts: str = PATIENT) -> dict[str, str]:
    return {"HAZ_REMOTE_URL": url, "HAZ_REMOTE_TIMEOUTS": timeouts}


#: How the 2 MiB blob travels: in one BatchReadBlobs/BatchUpdateBlobs message (the default
#: 4 MiB batch bound) or as a ReadBlob/WriteBlob stream of 32 KiB chunks (RC-006).
TRANSFER_ARGS = {
    "batch": [],
    "stream": ["--max-batch-total-size", "64KiB", "--stream-chunk-size", "32KiB"],
}
BOTH_PATHS = pytest.mark.parametrize("service", ["batch", "stream"], indirect=True)


@pytest.fixture
def service(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServiceProcess]:
    """A real service on a disk store (``tmp_path/store``); ``batch`` transfer limits unless
    a test parametrizes it with ``stream``."""
    path = getattr(request, "param", "batch")
    args = ["--storage", str(tmp_path / "store"), *TRANSFER_ARGS[path]]
    with service_process(tmp_path / "service.log", args) as svc:
        yield svc


def assert_path_taken(service: ServiceProcess, rpc: str) -> None:
    """In the ``stream`` configuration the big blob must have used the streaming ``rpc``.

    The service logs an RPC when it ends, and a stream cut by the proxy may end on the
    service's side after ``haz`` has finished: wait for the line (bounded) before failing.
    """
    if "--stream-chunk-size" not in service.args:
        return
    deadline = time.monotonic() + 10
    while f"ContentStore/{rpc}" not in service.log.read_text():
        assert time.monotonic() < deadline, f"no {rpc} in the service log"
        time.sleep(0.05)


@pytest.fixture
def proxy(service: ServiceProcess) -> Iterator[FaultProxy]:
    """A FaultProxy in front of the service, passing traffic until a test sets a fault."""
    with FaultProxy(target_host="127.0.0.1", target_port=service.port) as fault_proxy:
        yield fault_proxy


def proxy_url(proxy: FaultProxy) -> str:
    return f"grpc://127.0.0.1:{proxy.port}"


def seed_the_service(haz: HazRunner, make_workspace: WorkspaceMaker, url: str) -> Path:
    """Run a first clone against ``url`` so the service holds both tasks' results."""
    root = make_workspace(files(), name="seed")
    first = haz("run", "--workspace", cwd=root, env=env_for(url), timeout=RUN_TIMEOUT_S)
    assert first.code == 0, first.stderr
    assert first.sources() == {"app:build": "fresh", "lib:build": "fresh"}
    assert warning_lines(first.stderr) == []
    return root


def test_a_server_that_never_answers_costs_deadlines_not_the_run(
    haz: HazRunner, make_workspace: WorkspaceMaker, proxy: FaultProxy
) -> None:
    """RC-003: the proxy accepts connections and swallows every byte; the run completes
    locally within its bound, with exactly one warning."""
    proxy.fault = BlackHole()
    root = make_workspace(files(), name="ws")
    result = haz(
        "run",
        "--workspace",
        cwd=root,
        env=env_for(proxy_url(proxy), SHORT),
        timeout=RUN_TIMEOUT_S,
    )
    assert result.code == 0, result.stderr
    assert result.sources() == {"app:build": "fresh", "lib:build": "fresh"}
    assert len(warning_lines(result.stderr)) == 1, result.stderr
    assert outputs(root) == expected_outputs()
    assert proxy.connections >= 1  # haz really went through the black hole


@BOTH_PATHS
def test_a_reset_mid_download_still_yields_correct_outputs(
    haz: HazRunner, make_workspace: WorkspaceMaker, service: ServiceProcess, proxy: FaultProxy
) -> None:
    """RC-003/RC-001: the connection is reset 512 KiB into the download of the 2 MiB blob
    (on every connection); the run succeeds and every output is byte-identical, whether
    restored or rebuilt."""
    seed_the_service(haz, make_workspace, service.url)
    proxy.fault = ResetAfter(n=512 << 10, direction=Direction.DOWNSTREAM)
    root = make_workspace(files(), name="clone")
    result = haz(
        "run", "--workspace", cwd=root, env=env_for(proxy_url(proxy)), timeout=RUN_TIMEOUT_S
    )
    assert result.code == 0, result.stderr
    assert outputs(root) == expected_outputs()
    assert set(result.sources().values()) <= {"fresh", "remote-cache"}
    assert len(warning_lines(result.stderr)) <= 1, result.stderr
    assert proxy.connections >= 1
    assert_path_taken(service, "ReadBlob")


@BOTH_PATHS
def test_a_reset_mid_upload_publishes_nothing_wrong(
    haz: HazRunner, make_workspace: WorkspaceMaker, service: ServiceProcess, proxy: FaultProxy
) -> None:
    """RC-003/RC-004: the upload of the 2 MiB blob is reset 512 KiB in; the run succeeds, and
    a later clone (through a clean connection) gets correct outputs — nothing half-written
    became a hit."""
    proxy.fault = ResetAfter(n=512 << 10, direction=Direction.UPSTREAM)
    first_root = make_workspace(files(), name="uploader")
    first = haz(
        "run", "--workspace", cwd=first_root, env=env_for(proxy_url(proxy)), timeout=RUN_TIMEOUT_S
    )
    assert first.code == 0, first.stderr
    assert first.sources() == {"app:build": "fresh", "lib:build": "fresh"}
    assert len(warning_lines(first.stderr)) <= 1, first.stderr
    assert proxy.connections >= 1

    second_root = make_workspace(files(), name="reader")
    second = haz(
        "run", "--workspace", cwd=second_root, env=env_for(service.url), timeout=RUN_TIMEOUT_S
    )
    assert second.code == 0, second.stderr
    assert warning_lines(second.stderr) == []
    assert outputs(second_root) == expected_outputs()
    assert_path_taken(service, "WriteBlob")


def test_a_slow_link_within_the_deadlines_still_gets_hits(
    haz: HazRunner, make_workspace: WorkspaceMaker, service: ServiceProcess, proxy: FaultProxy
) -> None:
    """RC-003/RC-001: 250 ms of latency on every chunk each way — the connection handshake
    included — is slow but inside generous deadlines: the clone gets remote-cache hits and
    no warning. (Regression: the client once gave a connection attempt only 200 ms.)"""
    seed = make_workspace(small_files(), name="seed")
    first = haz("run", "--workspace", cwd=seed, env=env_for(service.url), timeout=RUN_TIMEOUT_S)
    assert first.code == 0, first.stderr
    proxy.fault = Latency(seconds=0.25)
    root = make_workspace(small_files(), name="clone")
    result = haz(
        "run", "--workspace", cwd=root, env=env_for(proxy_url(proxy)), timeout=RUN_TIMEOUT_S
    )
    assert result.code == 0, result.stderr
    assert warning_lines(result.stderr) == []
    assert result.sources() == {"app:build": "remote-cache", "lib:build": "remote-cache"}
    assert snapshot(root) == snapshot(seed)


@BOTH_PATHS
def test_a_byte_flipped_inside_a_downloaded_blob_is_caught_by_digest(
    haz: HazRunner, make_workspace: WorkspaceMaker, service: ServiceProcess, proxy: FaultProxy
) -> None:
    """RC-004/RC-003: one byte 1 MiB into the server→client stream — inside the 2 MiB
    blob's payload — is flipped; the client's digest check rejects the blob, ``lib:build``
    runs locally (``fresh``), outputs are correct, one warning."""
    seed_the_service(haz, make_workspace, service.url)
    proxy.fault = CorruptAt(offset=1 << 20, direction=Direction.DOWNSTREAM)
    root = make_workspace(files(), name="clone")
    result = haz(
        "run", "--workspace", cwd=root, env=env_for(proxy_url(proxy)), timeout=RUN_TIMEOUT_S
    )
    assert result.code == 0, result.stderr
    assert result.task("lib:build")["source"] == "fresh"
    assert outputs(root) == expected_outputs()
    warnings = warning_lines(result.stderr)
    assert len(warnings) == 1, result.stderr
    assert "corrupt" in warnings[0]
    assert_path_taken(service, "ReadBlob")


def test_a_blob_corrupted_on_the_server_disk_runs_the_task_locally(
    haz: HazRunner, make_workspace: WorkspaceMaker, service: ServiceProcess, tmp_path: Path
) -> None:
    """RC-004/RC-003: the stored blob file is overwritten with different bytes of the same
    size; the service's verifying read catches it by digest (DATA_LOSS, and deletes the
    blob so it is never served again), ``lib:build`` runs locally, outputs are correct, one
    warning."""
    seed_the_service(haz, make_workspace, service.url)
    big = expected_outputs()["lib/dist/blob.bin"][0]
    hexdigest = digest_bytes(HashName.BLAKE3, big).hex
    stored = tmp_path / "store" / "v1" / "cas" / "blake3" / hexdigest[:2] / f"{hexdigest}-{BIG}"
    original = stored.read_bytes()
    flipped = bytearray(original)
    flipped[len(flipped) // 2] ^= 0xFF
    stored.write_bytes(bytes(flipped))

    root = make_workspace(files(), name="clone")
    result = haz("run", "--workspace", cwd=root, env=env_for(service.url), timeout=RUN_TIMEOUT_S)
    assert result.code == 0, result.stderr
    assert result.task("lib:build")["source"] == "fresh"
    assert outputs(root) == expected_outputs()
    warnings = warning_lines(result.stderr)
    assert len(warnings) == 1, result.stderr
    assert "corrupt" in warnings[0]
    assert not stored.exists() or stored.read_bytes() == original  # never served again


@pytest.fixture
def s3_proxy(seaweed: SeaweedS3) -> Iterator[FaultProxy]:  # noqa: F811
    """A FaultProxy in front of the session SeaweedFS."""
    port = int(seaweed.endpoint_url.rpartition(":")[2])
    with FaultProxy(target_host="127.0.0.1", target_port=port) as fault_proxy:
        yield fault_proxy


def test_storage_that_stops_answering_costs_deadlines_not_the_run(
    haz: HazRunner, make_workspace: WorkspaceMaker, s3_proxy: FaultProxy, tmp_path: Path
) -> None:
    """RC-003 through the whole chain: the service's S3 (behind a proxy) turns into a black
    hole after startup; the service answers UNAVAILABLE or the client deadline fires, and
    ``haz run`` succeeds locally with one warning."""
    prefix = f"e2e-faults-{uuid.uuid4().hex[:12]}"
    with service_process(
        tmp_path / "service.log",
        [
            "--storage",
            f"s3://{BUCKET}/{prefix}",
            "--s3-endpoint",
            s3_proxy.url,
            "--s3-region",
            REGION,
        ],
        env=s3_client_env(),
        stop_grace_s=3,
    ) as svc:
        assert s3_proxy.connections >= 1  # the service checked its bucket through the proxy
        s3_proxy.fault = BlackHole()
        root = make_workspace(files(), name="ws")
        result = haz(
            "run", "--workspace", cwd=root, env=env_for(svc.url, SHORT), timeout=RUN_TIMEOUT_S
        )
        s3_proxy.stop()  # release the service's stuck S3 calls before it is stopped
    assert result.code == 0, result.stderr
    assert result.sources() == {"app:build": "fresh", "lib:build": "fresh"}
    assert outputs(root) == expected_outputs()
    assert len(warning_lines(result.stderr)) == 1, result.stderr
