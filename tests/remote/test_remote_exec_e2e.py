"""Remote execution end to end: a real ``haz-cache-service``, two real ``haz-worker`` processes
and ``haz run --remote-exec always`` on the bundled example workspace.

Spec coverage: RX-001..005 (every task of the run executes on a worker, its lines shown as
they come), RX-008 and CACHE-023 (the workspace built remotely is byte for byte the one built
locally, with the same keys), SEC-006 (results published by worker tokens).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fixtures import service_process

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
ACME = Path(__file__).resolve().parents[2] / "examples" / "acme"


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[str]:
    """A service and two workers (2 slots each); yields the service's URL. Every process is
    stopped by its PID."""
    with service_process(tmp_path / "service.log", ["--storage", str(tmp_path / "store")]) as svc:
        workers = [
            subprocess.Popen(
                [
                    str(BIN / "haz-worker"),
                    "--server",
                    svc.url,
                    "--slots",
                    "2",
                    "--work-dir",
                    str(tmp_path / name),
                    "--input-cache-size",
                    "256MB",
                    "--id",
                    name,
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=open(tmp_path / f"{name}.log", "wb"),  # noqa: SIM115 - closed with the process
            )
            for name in ("w1", "w2")
        ]
        try:
            yield svc.url
        finally:
            for worker in workers:
                worker.send_signal(signal.SIGTERM)
            for worker in workers:
                try:
                    worker.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.kill(worker.pid, signal.SIGKILL)
                    worker.wait()


def _workspace(root: Path) -> Path:
    shutil.copytree(ACME, root, ignore=shutil.ignore_patterns("cache", "state", "tmp", "lock*"))
    return root


def _tree(root: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(path.relative_to(root)): (path.read_bytes(), path.stat().st_mode & 0o777)
        for path in sorted(root.rglob("*"))
        if path.is_file() and ".haz" not in path.relative_to(root).parts
    }


def _run(root: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, object]]:
    summary = root.parent / f"{root.name}-summary.json"
    result = subprocess.run(
        [str(BIN / "haz"), "run", "--workspace", "--summary-json", str(summary), *args],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    document: dict[str, object] = json.loads(summary.read_text()) if summary.exists() else {}
    return result, document


def _tasks(summary: dict[str, object]) -> dict[str, dict[str, object]]:
    tasks = summary["tasks"]
    assert isinstance(tasks, list)
    return {str(task["task"]): task for task in tasks}


def test_a_workspace_built_on_workers_is_the_workspace_built_locally(
    pool: str, tmp_path: Path
) -> None:
    """RX-008: every task runs on a worker; outputs, modes and keys equal a local build's."""
    remote_root = _workspace(tmp_path / "remote")
    local_root = _workspace(tmp_path / "local")
    remote, remote_summary = _run(
        remote_root, "--remote", pool, "--remote-namespace", "e2e", "--remote-exec", "always"
    )
    assert remote.returncode == 0, remote.stdout + remote.stderr
    local, local_summary = _run(local_root)
    assert local.returncode == 0, local.stdout + local.stderr

    remote_tasks, local_tasks = _tasks(remote_summary), _tasks(local_summary)
    assert len(remote_tasks) == 14
    assert {task["source"] for task in remote_tasks.values()} == {"remote-exec"}
    assert {task["worker"] for task in remote_tasks.values()} <= {"w1", "w2"}
    # api:default's key covers api:test's stdout, in which unittest prints its own duration.
    same_keys = sorted(set(remote_tasks) - {"api:default"})
    assert [remote_tasks[name]["key"] for name in same_keys] == [
        local_tasks[name]["key"] for name in same_keys
    ]
    assert _tree(remote_root) == _tree(local_root)
    published = [p for p in (tmp_path / "store" / "v1" / "ns" / "e2e").rglob("*") if p.is_file()]
    assert len(published) == 14  # each result published once, by its worker (RX-004)
    # Live mode shows a remote task's lines under its name, as for a local task (RX-005).
    assert "[web:build] bundled 2 file(s) into dist/app.js" in remote.stdout


def test_a_failing_remote_task_reports_its_exit_code_and_streams_and_stores_nothing(
    pool: str, tmp_path: Path
) -> None:
    """RX-004/RX-008: a task failing on a worker fails the run as locally (exit code, both
    streams) and nothing is published: no manifest in the service's store."""
    root = tmp_path / "failing"
    (root / ".haz").mkdir(parents=True)
    (root / ".haz" / "workspace.yml").write_text("projects: [app]\n")
    (root / "app").mkdir()
    (root / "app" / "main.py").write_text(
        "import sys\nprint('partial output')\nsys.stderr.write('it broke\\n')\nsys.exit(3)\n"
    )
    (root / "app" / "haz.yml").write_text(
        "tasks:\n  build:\n    command: [python3, main.py]\n    inputs: [main.py]\n"
        "    outputs: [dist/**]\n"
    )
    result, summary = _run(root, "--remote", pool, "--remote-exec", "always")
    assert result.returncode == 1, result.stdout + result.stderr
    (task,) = _tasks(summary).values()
    assert (task["state"], task["exit_code"]) == ("failed", 3)
    assert task["worker"] in {"w1", "w2"}
    assert "[app:build] partial output" in result.stdout
    assert "it broke" in result.stdout + result.stderr
    # Manifests live under v1/ns/ (the acme test's store fills it); blobs may stay.
    manifests = tmp_path / "store" / "v1" / "ns"
    assert not manifests.exists() or [p for p in manifests.rglob("*") if p.is_file()] == []
