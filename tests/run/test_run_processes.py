"""``haz run`` end to end with real processes: caps, mutexes, signals, timeouts, big output.

Spec coverage: EXEC-004/005 (observed max concurrency), MUTEX-001..007 (no overlapping
intervals for an exclusive mutex; shared holders overlap), EXEC-008 (stdin is /dev/null),
EXEC-009 (timeouts fail the task), EXEC-011 (cascade), EXEC-012..015 (SIGINT kills the whole
process tree, exit 130, nothing stored; the first Ctrl-C says at once what happens, the second
kills), EXEC-016 (200 MiB of output with bounded memory),
EXEC-026 (git filters), SPEC §1 `lock`.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.run.conftest import HAZ, HazRunner, WorkspaceMaker, py


def recorder(log: Path, name: str, seconds: float = 0.4) -> str:
    """A command appending `S name` / `E name` around a sleep, to observe overlaps."""
    return py(
        "import os, time;"
        f"fd = os.open({str(log)!r}, os.O_WRONLY | os.O_APPEND | os.O_CREAT);"
        f"os.write(fd, b'S {name}\\n'); time.sleep({seconds}); os.write(fd, b'E {name}\\n')"
    )


def max_concurrency(log: Path, names: set[str] | None = None) -> int:
    running: set[str] = set()
    peak = 0
    for line in log.read_text().splitlines():
        kind, name = line.split()
        if names is not None and name not in names:
            continue
        if kind == "S":
            running.add(name)
        else:
            running.discard(name)
        peak = max(peak, len(running))
    return peak


def overlapping(log: Path, a: str, b: str) -> bool:
    running: set[str] = set()
    for line in log.read_text().splitlines():
        kind, name = line.split()
        if kind == "S":
            running.add(name)
            if {a, b} <= running:
                return True
        else:
            running.discard(name)
    return False


def test_global_and_tag_caps_bound_observed_concurrency(
    haz: HazRunner, make_workspace: WorkspaceMaker, tmp_path: Path
) -> None:
    log = tmp_path / "intervals.log"
    files = {".haz/workspace.yml": "projects: [p*]\nconcurrency: {default: 3, tags: {heavy: 1}}\n"}
    for i in range(6):
        tags = "[heavy]" if i < 3 else "[light]"
        files[f"p{i}/haz.yml"] = (
            f"tags: {tags}\ntasks:\n  t:\n    command: {recorder(log, f'p{i}')}\n    cache: false\n"
        )
    root = make_workspace(files)
    result = haz("run", "--workspace", cwd=root)
    assert result.code == 0, result.stderr
    assert max_concurrency(log) <= 3
    assert max_concurrency(log, {"p0", "p1", "p2"}) == 1
    assert haz("run", "--workspace", "-j", "1", cwd=root).code == 0


SHARED = "{name: ro, mode: shared}"


def test_exclusive_mutex_never_overlaps_and_shared_holders_do(
    haz: HazRunner, make_workspace: WorkspaceMaker, tmp_path: Path
) -> None:
    log = tmp_path / "mutex.log"
    root = make_workspace(
        {
            ".haz/workspace.yml": "concurrency: {default: 4}\n",
            "haz.yml": (
                "tasks:\n"
                f"  a: {{command: {recorder(log, 'a')}, mutex: db, cache: false}}\n"
                f"  b: {{command: {recorder(log, 'b')}, mutex: db, cache: false}}\n"
                f"  c: {{command: {recorder(log, 'c')}, mutex: '~:db', cache: false}}\n"
                f"  r1: {{command: {recorder(log, 'r1', 1.0)}, mutex: {SHARED}, cache: false}}\n"
                f"  r2: {{command: {recorder(log, 'r2', 1.0)}, mutex: {SHARED}, cache: false}}\n"
            ),
        }
    )
    result = haz("run", "a", "b", "c", "r1", "r2", cwd=root)
    assert result.code == 0, result.stderr
    assert not overlapping(log, "a", "b")
    assert overlapping(log, "r1", "r2")


def test_stdin_is_dev_null(haz: HazRunner, make_workspace: WorkspaceMaker) -> None:
    root = make_workspace(
        {
            ".haz/workspace.yml": "",
            "haz.yml": (
                f"tasks:\n  read: {{command: {py('import sys; print(repr(sys.stdin.read()))')}}}\n"
                "  quick: {command: [true]}\n"
            ),
        }
    )
    result = haz("run", "read", "quick", cwd=root)
    assert result.code == 0
    assert b"[root:read] ''" in result.stdout


def test_timeout_fails_the_task_and_is_not_stored(
    haz: HazRunner, make_workspace: WorkspaceMaker
) -> None:
    """EXEC-009: a task ignoring SIGTERM past its timeout is killed after the grace period."""
    stubborn = py(
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    )
    root = make_workspace(
        {
            ".haz/workspace.yml": "execution: {grace_period: 200ms}\n",
            "haz.yml": f"tasks:\n  slow:\n    command: {stubborn}\n    timeout: 500ms\n",
        }
    )
    result = haz("run", "slow", cwd=root, timeout=30)
    assert result.code == 1
    entry = result.task("root:slow")
    assert entry["state"] == "failed"
    assert "timed out after" in str(entry["error"])
    assert not list((root / ".haz").rglob("manifest.json"))


def test_sigint_kills_the_whole_process_tree_and_exits_130(
    make_workspace: WorkspaceMaker, tmp_path: Path
) -> None:
    """EXEC-012..015: grandchildren die too; nothing is stored; exit 128+SIGINT."""
    pids = tmp_path / "pids"
    pids.mkdir()
    tree = py(
        "import os, subprocess, sys, time;"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']);"
        f"open({str(pids)!r} + '/grandchild', 'w').write(str(child.pid));"
        f"open({str(pids)!r} + '/child', 'w').write(str(os.getpid()));"
        "time.sleep(120)"
    )
    root = make_workspace(
        {
            ".haz/workspace.yml": "execution: {grace_period: 1s}\n",
            "haz.yml": (
                f"tasks:\n  tree:\n    command: {tree}\n"
                f"  after:\n    command: {py('pass')}\n    deps: [~:tree]\n"
            ),
        }
    )
    summary = tmp_path / "summary.json"
    proc = subprocess.Popen(
        [HAZ, "run", "after", "--summary-json", str(summary)],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while not (pids / "grandchild").exists() or not (pids / "child").exists():
        assert time.monotonic() < deadline, "the task never started"
        assert proc.poll() is None
        time.sleep(0.05)
    time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    for name in ("child", "grandchild"):
        pid = int((pids / name).read_text())
        deadline = time.monotonic() + 10
        while _alive(pid):
            assert time.monotonic() < deadline, f"{name} {pid} survived the cancellation"
            time.sleep(0.05)
    import json

    data = json.loads(summary.read_text())
    states = {t["task"]: t["state"] for t in data["tasks"]}
    assert states == {"root:after": "cancelled", "root:tree": "cancelled"}
    assert data["exit_code"] == 130
    assert not list((root / ".haz").rglob("manifest.json"))


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.slow
def test_200_mib_of_output_keeps_memory_bounded(
    make_workspace: WorkspaceMaker, tmp_path: Path
) -> None:
    """EXEC-008/016: streams are spooled and stored in chunks, never held whole."""
    blast = py(
        "import sys;"
        "line = b'x' * 1023 + b'\\n';"
        "block = line * 1024;"
        "[sys.stdout.buffer.write(block) for _ in range(200)]"
    )
    root = make_workspace(
        {".haz/workspace.yml": "", "haz.yml": f"tasks:\n  blast:\n    command: {blast}\n"}
    )
    out = tmp_path / "out.bin"
    probe = (
        "import resource, subprocess, sys;"
        "code = subprocess.run(sys.argv[2:], stdout=open(sys.argv[1], 'wb')).returncode;"
        "print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, str(out), HAZ, "run", "blast"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    code, peak_kib = (int(x) for x in result.stdout.split())
    assert code == 0, result.stderr
    assert out.stat().st_size == 200 * 1024 * 1024 + 200 * 1024 * len(b"[root:blast] ")
    assert peak_kib < 150 * 1024, f"peak RSS {peak_kib} KiB"


NOOP = py("pass")


def test_git_changed_selects_affected_tasks_and_what_they_need(
    haz: HazRunner, make_workspace: WorkspaceMaker
) -> None:
    """EXEC-026/029: inputs matching a changed path, their dependants, and their needs."""
    root = make_workspace(
        {
            ".haz/workspace.yml": "projects: [lib, app, docs]\n",
            "lib/haz.yml": f"tasks:\n  build: {{command: {py('pass')}, inputs: [src/**]}}\n",
            "lib/src/a.txt": "a",
            "app/haz.yml": (
                f"tasks:\n  build: {{command: {NOOP}, inputs: [main.txt], deps: [lib:build]}}\n"
            ),
            "app/main.txt": "m",
            "docs/haz.yml": f"tasks:\n  build: {{command: {py('pass')}, inputs: ['*.md']}}\n",
            "docs/index.md": "# docs",
        }
    )
    git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], cwd=root, check=True)
    subprocess.run([*git, "add", "-A"], cwd=root, check=True)
    subprocess.run([*git, "commit", "-qm", "init"], cwd=root, check=True)
    (root / "lib" / "src" / "a.txt").write_text("changed")
    result = haz("run", "--workspace", "--git-changed", cwd=root)
    assert result.code == 0, result.stderr
    assert sorted(result.sources()) == ["app:build", "lib:build"]
    (root / "docs" / "new.md").write_text("untracked")
    result = haz("run", "--workspace", "--git-changed", cwd=root)
    assert sorted(result.sources()) == ["app:build", "docs:build", "lib:build"]
    staged = haz("run", "--workspace", "--git-staged", cwd=root)
    assert staged.summary is not None
    assert staged.summary["tasks"] == []
    assert haz("run", "app:build", "--git-changed", cwd=root).code == 2


def test_workspace_lock_makes_a_second_run_wait(
    make_workspace: WorkspaceMaker, tmp_path: Path
) -> None:
    """SPEC §1 ``lock: true``: the second run waits (naming the first) for the whole run.

    The task holds until the second run says it waits (not a fixed sleep, which a loaded
    machine's start-up time can outlast)."""
    log, gate = tmp_path / "lock.log", tmp_path / "gate"
    hold = py(
        "import os, time;"
        f"fd = os.open({str(log)!r}, os.O_WRONLY | os.O_APPEND | os.O_CREAT);"
        "os.write(fd, b'S t\\n'); deadline = time.monotonic() + 30;"
        f"[time.sleep(0.02) for _ in iter(lambda: os.path.exists({str(gate)!r})"
        " or time.monotonic() > deadline, True)];"
        "os.write(fd, b'E t\\n')"
    )
    root = make_workspace(
        {
            ".haz/workspace.yml": "lock: true\n",
            "haz.yml": f"tasks:\n  t: {{command: {hold}, cache: false}}\n",
        }
    )
    first = subprocess.Popen([HAZ, "run", "t"], cwd=root, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while not log.exists():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    errors = tmp_path / "second.stderr"
    with open(errors, "wb") as sink:
        second = subprocess.Popen([HAZ, "run", "t"], cwd=root, stderr=sink)
    try:
        deadline = time.monotonic() + 60
        while "waiting" not in errors.read_text() and log.read_text().count("S t") < 2:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        gate.touch()
        first.communicate(timeout=60)
        second.wait(timeout=60)
    assert (first.returncode, second.returncode) == (0, 0)
    assert "waiting for another haz run" in errors.read_text()
    assert f"pid {first.pid}: haz run t" in errors.read_text()  # names the run it waits for
    assert log.read_text().splitlines() == ["S t", "E t", "S t", "E t"]


def test_two_tasks_materialising_one_path_is_an_output_overlap(
    haz: HazRunner, make_workspace: WorkspaceMaker
) -> None:
    """EXEC-020: glob outputs that overlap at run time stop admission (exit 1): `b` would
    collect `a`'s out/x.txt, so it fails unspawned and `c` is skipped naming it."""
    write = py("import os; os.makedirs('out', exist_ok=True); open('out/x.txt', 'w').write('1')")
    root = make_workspace(
        {
            ".haz/workspace.yml": "concurrency: {default: 1}\n",
            "haz.yml": (
                f"tasks:\n  a: {{command: {write}, outputs: ['out/*.txt']}}\n"
                f"  b: {{command: {write}, outputs: ['out/**']}}\n"
                f"  c: {{command: {NOOP}, deps: [~:a, ~:b]}}\n"
            ),
        }
    )
    result = haz("run", "c", cwd=root)
    assert result.code == 1
    assert result.task("root:b")["state"] == "failed"
    assert result.task("root:c")["skip_cause"] == {"kind": "output-overlap", "upstream": "root:b"}


def test_first_ctrl_c_says_at_once_what_happens_and_the_second_kills(
    make_workspace: WorkspaceMaker, tmp_path: Path
) -> None:
    """EXEC-012..015: with a task ignoring SIGTERM, the first Ctrl-C prints what haz does
    now (SIGTERM, SIGKILL after the grace period, Ctrl-C again to kill) while the task still
    runs; the second one says it kills, and the run ends with 130."""
    pid_file = tmp_path / "pid"
    stubborn = py(
        "import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
        f"open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
    )
    root = make_workspace(
        {
            ".haz/workspace.yml": "execution: {grace_period: 30s}\n",
            "haz.yml": f"tasks:\n  stubborn:\n    command: {stubborn}\n    cache: false\n",
        }
    )
    log = tmp_path / "stderr"
    with open(log, "wb") as sink:
        proc = subprocess.Popen([HAZ, "run", "stubborn"], cwd=root, stderr=sink)
    try:
        deadline = time.monotonic() + 30
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline, "the task never started"
            time.sleep(0.05)
        task_pid = int(pid_file.read_text())
        proc.send_signal(signal.SIGINT)
        # Old behaviour: silence until the grace period ends (here 30 s, then exit).
        while "stopping" not in log.read_text() and proc.poll() is None:
            time.sleep(0.05)
        first = log.read_text()
        assert "stopping 1 running task(s) (SIGTERM; killing in 30.0s)" in first, first
        assert "Ctrl-C again to kill now" in first
        assert _alive(task_pid)  # the message came while the task ignored SIGTERM
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "killing 1 running task(s) now (SIGKILL)" in log.read_text()
    deadline = time.monotonic() + 10
    while _alive(task_pid):
        assert time.monotonic() < deadline, "the task survived the second Ctrl-C"
        time.sleep(0.05)
