"""``haz run`` against the real ``haz-cache-service`` subprocess, end to end.

Spec coverage: RC-001/RC-008/CACHE-023 (two clones of a workspace at different paths share
results: the second clone, with an empty local cache, gets only ``remote-cache`` hits with
byte-identical outputs, modes and streams), RC-006 (outputs above the server's batch bound
stream in chunks), RC-002 (read-only never writes: the server's store is unchanged), RC-003
(a server killed mid-run: the run still succeeds, with one warning).
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.remote.test_run_remote import FAST, files, snapshot, warning_lines
from tests.run.conftest import HazRunner, WorkspaceMaker, py
from tests.support.fixtures import service_process

pytestmark = pytest.mark.e2e


@dataclass
class Service:
    process: subprocess.Popen[bytes]
    url: str
    store: Path
    log: Path

    def store_snapshot(self) -> dict[str, bytes]:
        return {
            str(path.relative_to(self.store)): path.read_bytes()
            for path in sorted(self.store.rglob("*"))
            if path.is_file()
        }


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    """A real ``haz-cache-service`` on a free loopback port, with a small batch bound so
    multi-hundred-KiB outputs take the streaming path (RC-006)."""
    store = tmp_path / "service-store"
    args = ["--storage", str(store), "--max-batch-total-size", "64KiB"]
    args += ["--stream-chunk-size", "32KiB"]
    with service_process(tmp_path / "service.log", args, stop_grace_s=15) as running:
        yield Service(process=running.process, url=running.url, store=store, log=running.log)


def env_for(service: Service, **extra: str) -> dict[str, str]:
    return {"HAZ_REMOTE_URL": service.url, "HAZ_REMOTE_TIMEOUTS": FAST, **extra}


def test_two_clones_share_results_through_the_real_service(
    haz: HazRunner, make_workspace: WorkspaceMaker, service: Service
) -> None:
    """RC-001/RC-008/CACHE-023 with the real server: the second clone (empty local cache, other
    path) gets only remote-cache hits, byte-identical outputs, modes and streams."""
    first_root = make_workspace(files(), name="clone-one")
    second_root = make_workspace(files(), name="clone-two")
    first = haz("run", "--workspace", "--output", "buffered", cwd=first_root, env=env_for(service))
    assert first.code == 0, first.stderr
    assert first.sources() == {"app:build": "fresh", "lib:build": "fresh"}
    assert warning_lines(first.stderr) == []

    second = haz(
        "run", "--workspace", "--output", "buffered", cwd=second_root, env=env_for(service)
    )
    assert second.code == 0, second.stderr
    assert second.sources() == {"app:build": "remote-cache", "lib:build": "remote-cache"}
    assert second.stdout == first.stdout
    assert "a warning" in second.stderr
    assert snapshot(second_root) == snapshot(first_root)
    assert warning_lines(second.stderr) == []
    assert "ContentStore/WriteBlob" in service.log.read_text()  # the 300 KB output streamed
    assert "ContentStore/ReadBlob" in service.log.read_text()


def test_read_only_mode_leaves_the_service_store_unchanged(
    haz: HazRunner, make_workspace: WorkspaceMaker, service: Service
) -> None:
    """RC-002: read-only looks up but never writes blobs or manifests."""
    seed = make_workspace(files(), name="seed")
    assert haz("run", "--workspace", "--force", cwd=seed, env=env_for(service)).code == 0
    before = service.store_snapshot()
    assert before  # the seed run wrote something
    other = make_workspace(files(app_reads_lib=False), name="reader")
    result = haz(
        "run", "--workspace", "--remote-mode", "read-only", cwd=other, env=env_for(service)
    )
    assert result.code == 0, result.stderr
    assert result.task("app:build")["source"] == "fresh"  # a different key: ran, not uploaded
    assert service.store_snapshot() == before


def test_a_service_killed_mid_run_does_not_fail_the_run(
    haz: HazRunner, make_workspace: WorkspaceMaker, service: Service
) -> None:
    """RC-003: the server dies between two tasks: later lookups and uploads fail, the run
    succeeds locally with exactly one warning."""
    kill = py(f"import os, signal; os.kill({service.process.pid}, signal.SIGKILL); print('x')")
    root = make_workspace(
        {
            ".haz/workspace.yml": "projects: [p]\n",
            "p/haz.yml": (
                "tasks:\n"
                "  first:\n"
                f"    command: {py('print(1)')}\n"
                "  killer:\n"
                f"    command: {kill}\n"
                '    deps: ["~:first"]\n'
                "  last:\n"
                f"    command: {py('print(3)')}\n"
                '    deps: ["~:killer"]\n'
            ),
        }
    )
    result = haz("run", "--workspace", cwd=root, env=env_for(service))
    assert result.code == 0, result.stderr
    assert set(result.sources().values()) == {"fresh"}
    assert service.process.wait(timeout=10) == -signal.SIGKILL
    assert len(warning_lines(result.stderr)) == 1
    assert os.path.exists(root / ".haz" / "cache")  # the local cache still got everything
