"""Two real ``haz run`` processes in one workspace (issue 12, "Permission denied").

Spec coverage:
* SPEC §1 ``lock`` (absent) — concurrent runs are allowed, but a run never writes the
  outputs of a task another live run is restoring or running: it waits for that task, says
  on stderr which run it waits for (pid and command line), and then looks the key up again
  (the other run stored it: a hit, the task runs once).
* Runs whose tasks are disjoint proceed side by side (no workspace-wide serialisation).
* Task locks die with their process: a SIGKILLed run never blocks the next one.

The cause found: both runs missed the same task (neither had stored it yet) and ran it at
the same time; one run's dependant then executed ``build/tool`` while the other run was
rewriting it (``Text file busy`` / ``Permission denied`` before its final ``chmod +x``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from tests.run.conftest import HAZ, WorkspaceMaker, py
from tests.run.test_run_processes import overlapping


def gated(log: Path, name: str, gate: Path) -> str:
    """A command logging ``S name``, waiting (up to 30 s) for ``gate`` to exist, logging
    ``E name`` and writing ``out/<name>.txt``."""
    return py(
        "import os, time;"
        f"fd = os.open({str(log)!r}, os.O_WRONLY | os.O_APPEND | os.O_CREAT);"
        f"os.write(fd, b'S {name}\\n');"
        "deadline = time.monotonic() + 30;"
        f"[time.sleep(0.02) for _ in iter(lambda: os.path.exists({str(gate)!r})"
        " or time.monotonic() > deadline, True)];"
        "os.makedirs('out', exist_ok=True);"
        f"open('out/{name}.txt', 'w').write('{name}');"
        f"os.write(fd, b'E {name}\\n')"
    )


def _wait_for(condition: Callable[[], object], *, timeout: float = 30, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _start(root: Path, *args: str, stderr: Path, summary: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    with open(stderr, "wb") as sink:
        return subprocess.Popen(
            [HAZ, "run", *args, "--summary-json", str(summary)],
            cwd=root,
            stdout=subprocess.DEVNULL,
            stderr=sink,
            stdin=subprocess.DEVNULL,
            env=env,
        )


def test_a_second_run_waits_for_a_task_the_first_is_running_then_hits(
    make_workspace: WorkspaceMaker, tmp_path: Path
) -> None:
    """The overlapping task runs once: the second run waits, naming the first, and hits."""
    log, gate = tmp_path / "log", tmp_path / "gate"
    root = make_workspace(
        {
            ".haz/workspace.yml": "",
            "haz.yml": (
                "tasks:\n"
                f"  build: {{command: {gated(log, 'build', gate)}, inputs: [],"
                " outputs: [out/**]}\n"
                f"  test: {{command: {py('pass')}, deps: [~:build], cache: false}}\n"
            ),
        }
    )
    first = _start(root, "test", stderr=tmp_path / "e1", summary=tmp_path / "s1.json")
    _wait_for(lambda: log.exists() and "S build" in log.read_text(), what="the first build")
    second = _start(root, "test", stderr=tmp_path / "e2", summary=tmp_path / "s2.json")
    try:
        # Old behaviour: the second run starts `build` too (a second `S build`).
        _wait_for(
            lambda: (
                "waiting" in (tmp_path / "e2").read_text() or log.read_text().count("S build") > 1
            ),
            what="the second run to wait or to start the task",
        )
    finally:
        gate.touch()
        first.wait(timeout=60)
        second.wait(timeout=60)
    message = (tmp_path / "e2").read_text()
    assert (first.returncode, second.returncode) == (0, 0), message
    assert log.read_text().splitlines() == ["S build", "E build"]
    assert f"pid {first.pid}" in message, message
    assert "haz run test" in message, message
    assert "waiting for root:build" in message, message
    summary = json.loads((tmp_path / "s2.json").read_text())
    sources = {t["task"]: t["source"] for t in summary["tasks"]}
    assert sources == {"root:build": "local-cache", "root:test": "fresh"}


def test_runs_of_disjoint_tasks_proceed_side_by_side(
    make_workspace: WorkspaceMaker, tmp_path: Path
) -> None:
    """No workspace-wide serialisation without ``lock: true``: task ``a`` (first run) waits
    until task ``b`` (second run) has started, which only happens if both run at once."""
    log = tmp_path / "log"
    root = make_workspace(
        {
            ".haz/workspace.yml": "",
            "haz.yml": (
                "tasks:\n"
                f"  a: {{command: {gated(log, 'a', tmp_path / 'b.started')}, outputs: [a/**]}}\n"
                f"  b: {{command: {gated(log, 'b', tmp_path / 'none')}, outputs: [b/**],"
                " cache: false}\n"
            ),
        }
    )
    first = _start(root, "a", stderr=tmp_path / "e1", summary=tmp_path / "s1.json")
    _wait_for(lambda: log.exists() and "S a" in log.read_text(), what="task a")
    second = _start(root, "b", stderr=tmp_path / "e2", summary=tmp_path / "s2.json")
    try:
        _wait_for(
            lambda: "S b" in log.read_text() or first.poll() is not None, timeout=60, what="b"
        )
    finally:
        (tmp_path / "b.started").touch()
        (tmp_path / "none").touch()
        assert (first.wait(timeout=60), second.wait(timeout=60)) == (0, 0)
    assert overlapping(log, "a", "b"), log.read_text()
    assert "waiting" not in (tmp_path / "e2").read_text()


def test_a_sigkilled_run_never_blocks_the_next(
    make_workspace: WorkspaceMaker, tmp_path: Path
) -> None:
    """Task locks die with their process (flock): the next run does not wait."""
    log, gate = tmp_path / "log", tmp_path / "gate"
    root = make_workspace(
        {
            ".haz/workspace.yml": "",
            "haz.yml": (
                f"tasks:\n  build: {{command: {gated(log, 'build', gate)}, outputs: [out/**]}}\n"
            ),
        }
    )
    first = _start(root, "build", stderr=tmp_path / "e1", summary=tmp_path / "s1.json")
    _wait_for(lambda: log.exists() and "S build" in log.read_text(), what="the first build")
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    gate.touch()  # the orphaned task (if the supervisor outlives haz) finishes at once
    second = _start(root, "build", stderr=tmp_path / "e2", summary=tmp_path / "s2.json")
    assert second.wait(timeout=60) == 0, (tmp_path / "e2").read_text()
    assert "waiting" not in (tmp_path / "e2").read_text()


def test_a_restore_waits_while_another_run_is_running_the_task(
    make_workspace: WorkspaceMaker, tmp_path: Path
) -> None:
    """A local hit is not restored over outputs another live run's task is writing: the
    restore waits for that run (restores write outputs too)."""
    log, gate = tmp_path / "log", tmp_path / "gate"
    root = make_workspace(
        {
            ".haz/workspace.yml": "",
            "src.txt": "v1",
            "haz.yml": (
                "tasks:\n"
                f"  build: {{command: {gated(log, 'build', gate)}, inputs: [src.txt],"
                " outputs: [out/**]}\n"
            ),
        }
    )
    gate.touch()
    seed = _start(root, "build", stderr=tmp_path / "e0", summary=tmp_path / "s0.json")
    assert seed.wait(timeout=60) == 0  # an entry for v1
    gate.unlink()
    log.unlink()
    (root / "src.txt").write_text("v2")
    first = _start(root, "build", stderr=tmp_path / "e1", summary=tmp_path / "s1.json")
    _wait_for(lambda: log.exists() and "S build" in log.read_text(), what="the v2 build")
    (root / "src.txt").write_text("v1")  # the second run's key hits the v1 entry
    second = _start(root, "build", stderr=tmp_path / "e2", summary=tmp_path / "s2.json")
    try:
        # Old behaviour: the second run restores at once and exits while the task runs.
        _wait_for(
            lambda: "waiting" in (tmp_path / "e2").read_text() or second.poll() is not None,
            what="the second run to wait or to finish",
        )
        assert second.poll() is None, (tmp_path / "e2").read_text()
    finally:
        gate.touch()
        first.wait(timeout=60)
        second.wait(timeout=60)
    assert (first.returncode, second.returncode) == (0, 0), (tmp_path / "e2").read_text()
    assert f"pid {first.pid}" in (tmp_path / "e2").read_text()
    summary = json.loads((tmp_path / "s2.json").read_text())
    assert [t["source"] for t in summary["tasks"]] == ["local-cache"]
