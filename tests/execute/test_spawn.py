"""The subprocess spawner on real processes (EXEC-008, EXEC-009, EXEC-012..015)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hazremote.domain.digest import digest_bytes
from hazremote.domain.model import HashName
from hazremote.execute.spawn import SpawnRequest, SubprocessSpawner, describe_exec_error

from .conftest import PY, SYSTEM_PATH, Cancel, Runner, pid_exists, wait_for_file

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the child subreaper is Linux-only"
)

# A command whose child (a shell) starts a grandchild; both pids are written to argv[1].
TREE = r"""
import os, subprocess, sys, time
out = sys.argv[1]
child = subprocess.Popen(["sh", "-c", f"sleep 60 & echo $! > {out}.gc; wait"])
while not (os.path.exists(out + ".gc") and open(out + ".gc").read().endswith("\n")):
    time.sleep(0.01)
grandchild = open(out + ".gc").read().strip()
with open(out + ".tmp", "w") as f:
    f.write(f"{child.pid} {grandchild}\n")
os.rename(out + ".tmp", out)
time.sleep(60)
"""

# A command that starts a child in a new session (setsid) and exits at once.
ESCAPE_AND_EXIT = r"""
import subprocess, sys
p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                     start_new_session=True)
open(sys.argv[1], "w").write(f"{p.pid}\n")
"""

# A command that double-forks a daemon (setsid, parent gone, so the daemon is an orphan) and
# keeps running. The daemon records a SIGTERM in argv[1].term before exiting.
DAEMONIZE_AND_WAIT = r"""
import os, signal, sys, time
out = sys.argv[1]
pid = os.fork()
if pid == 0:
    if os.fork() == 0:
        os.setsid()
        def on_term(*_):
            open(out + ".term", "w").write("term\n")
            os._exit(0)
        signal.signal(signal.SIGTERM, on_term)
        with open(out + ".tmp", "w") as f:
            f.write(f"{os.getpid()}\n")
        os.rename(out + ".tmp", out)
        while True:
            time.sleep(1)
    os._exit(0)
os.waitpid(pid, 0)
time.sleep(60)
"""

IGNORE_TERM = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ready', flush=True)\n"
    "time.sleep(60)\n"
)


@pytest.mark.parametrize("code", [0, 1, 3, 255])
def test_exit_code_is_reported(runner: Runner, code: int) -> None:
    """EXEC-009: the command's exit status is the outcome's exit code; only 0 succeeds."""
    result = runner.python(f"import sys; sys.exit({code})")
    assert result.outcome.exit_code == code
    assert result.outcome.signal is None
    assert result.outcome.spawn_error is None
    assert result.outcome.succeeded is (code == 0)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGSEGV])
def test_death_by_signal_is_reported(runner: Runner, sig: signal.Signals) -> None:
    """EXEC-009: a command killed by a signal has no exit code, the signal number instead."""
    result = runner.python(f"import os; os.kill(os.getpid(), {int(sig)})")
    assert result.outcome.signal == sig
    assert result.outcome.exit_code is None
    assert not result.outcome.succeeded


def test_environment_is_exactly_the_given_mapping(runner: Runner) -> None:
    """EXEC-008: the process sees the given variables and nothing else (not haz's own)."""
    os.environ["HAZ_TEST_MUST_NOT_LEAK"] = "secret"
    try:
        spawner_runner = Runner(tmp=runner.tmp)  # constructed while the variable is set
        env = {
            "PATH": SYSTEM_PATH,
            "EMPTY": "",
            "WITH_EQUALS": "a=b=c",
            "MULTI_LINE": "one\ntwo",
            "UNICODE": "héllo ✓",
            "UNDECODABLE": os.fsdecode(b"\xff\xfe"),  # surrogate-escaped, as os.environ has it
        }
        result = spawner_runner.run(["env", "-0"], env=env)
    finally:
        del os.environ["HAZ_TEST_MUST_NOT_LEAK"]
    assert result.outcome.exit_code == 0
    entries = [e for e in result.stdout.split(b"\0") if e]
    seen = dict(entry.split(b"=", 1) for entry in entries)
    assert seen == {os.fsencode(k): os.fsencode(v) for k, v in env.items()}


def test_program_is_looked_up_on_the_task_path(runner: Runner, tmp_path: Path) -> None:
    """EXEC-008: a bare program name is found on the task's PATH, not on haz's."""
    tools = tmp_path / "tools"
    tools.mkdir()
    tool = tools / "haz-test-tool"
    tool.write_text("#!/bin/sh\necho tool ran\n")
    tool.chmod(0o755)
    result = runner.run(["haz-test-tool"], env={"PATH": str(tools)})
    assert result.outcome.exit_code == 0
    assert result.stdout == b"tool ran\n"


def test_working_directory_is_the_given_one(runner: Runner, tmp_path: Path) -> None:
    """EXEC-008: cwd is the request's directory (the project root)."""
    project = tmp_path / "packages" / "core"
    project.mkdir(parents=True)
    result = runner.python("import os; print(os.getcwd())", cwd=project)
    assert result.stdout.decode().strip() == str(project)


def test_stdin_is_dev_null(runner: Runner) -> None:
    """EXEC-008: reading stdin gets EOF at once, and stdin is /dev/null."""
    result = runner.python(
        "import os, sys; data = sys.stdin.buffer.read(); "
        "print(len(data), os.path.realpath('/proc/self/fd/0') if os.path.exists('/proc') "
        "else '/dev/null')"
    )
    assert result.stdout.split() == [b"0", b"/dev/null"]


def test_signal_dispositions_are_reset_for_the_command(runner: Runner) -> None:
    """EXEC-008: the command starts with no ignored or blocked signal (Python ignores SIGPIPE)."""
    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc")
    result = runner.run(["cat", "/proc/self/status"])
    fields = dict(line.split(":", 1) for line in result.stdout.decode().splitlines() if ":" in line)
    # Signals 32 and 33 are reserved by glibc (thread cancellation, setxid): no program can
    # change their disposition, so a parent that ignores them (seen under some CI harnesses)
    # passes that on. Every other signal must be default and unblocked.
    reserved = (1 << 31) | (1 << 32)
    assert int(fields["SigIgn"].strip(), 16) & ~reserved == 0
    assert int(fields["SigBlk"].strip(), 16) & ~reserved == 0


def test_command_leads_its_own_process_group(runner: Runner) -> None:
    """EXEC-008: the command runs in its own process group, not haz's."""
    result = runner.python("import os; print(os.getpgrp(), os.getpid())")
    pgid, pid = result.stdout.split()
    assert pgid == pid
    assert int(pgid) != os.getpgrp()
    assert result.outcome.pid == int(pid)


def test_binary_output_is_byte_exact_in_spools_and_callbacks(runner: Runner) -> None:
    """EXEC-008/EXEC-017: bytes pass unchanged (invalid UTF-8, NULs, no newline at the end)."""
    out = bytes(range(256)) * 16 + b"\xff\xfe invalid utf-8 \xc3\x28"
    err = b"\x00\x01\r\n\x80 stderr without newline"
    code = (
        "import sys\n"
        f"sys.stdout.buffer.write({out!r}); sys.stdout.flush()\n"
        f"sys.stderr.buffer.write({err!r}); sys.stderr.flush()\n"
    )
    result = runner.python(code, hash_name=HashName.BLAKE3)
    assert result.outcome.exit_code == 0
    assert result.stdout == out
    assert result.stdout_spool == out
    assert result.stderr == err
    assert result.stderr_spool == err
    assert (result.outcome.stdout_size, result.outcome.stderr_size) == (len(out), len(err))
    assert result.outcome.stdout_digest == digest_bytes(HashName.BLAKE3, out)
    assert result.outcome.stderr_digest == digest_bytes(HashName.BLAKE3, err)


def test_digests_are_absent_unless_asked(runner: Runner) -> None:
    """The on-the-fly hash is optional: no hash function, no digests."""
    result = runner.python("print('x')")
    assert result.outcome.stdout_digest is None
    assert result.outcome.stderr_digest is None


def _vm_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(field)


def test_large_output_keeps_memory_bounded(runner: Runner) -> None:
    """EXEC-008: 96 MiB of output is spooled, not held: peak RSS grows by less than 32 MiB."""
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs /proc/self/clear_refs to reset the peak RSS")
    mib = 96
    code = f"import sys\nb = b'x' * (1 << 20)\nfor _ in range({mib}): sys.stdout.buffer.write(b)"
    seen = 0

    def count(chunk: bytes) -> None:
        nonlocal seen
        seen += len(chunk)

    request = runner.request([PY, "-c", code])
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM (the peak) to the current RSS
    before = _vm_kib("VmRSS")
    outcome = asyncio.run(
        runner.spawner.run(request, on_stdout=count, on_stderr=count, cancel=Cancel())
    )
    peak = _vm_kib("VmHWM")
    assert outcome.exit_code == 0
    assert seen == outcome.stdout_size == mib << 20
    assert (runner.tmp / "stdout.spool").stat().st_size == mib << 20
    assert peak - before < 32 * 1024, f"peak RSS grew by {(peak - before) // 1024} MiB"


def test_command_not_found_is_an_outcome(runner: Runner) -> None:
    """EXEC-008: a missing program is reported as a clear message, not an exception."""
    result = runner.run(["frobnicate-haz-test"])
    assert result.outcome.spawn_error == "command not found: frobnicate-haz-test"
    assert result.outcome.exit_code is None
    assert result.outcome.pid is None
    assert not result.outcome.succeeded


def test_missing_path_is_not_found(runner: Runner, tmp_path: Path) -> None:
    """EXEC-008: a program given as a path that does not exist."""
    result = runner.run(["./scripts/missing.sh"])
    assert result.outcome.spawn_error == "command not found: ./scripts/missing.sh"


def test_command_not_executable_is_an_outcome(runner: Runner, tmp_path: Path) -> None:
    """EXEC-008: a file without the execute bit fails with "permission denied"."""
    script = tmp_path / "build.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    result = runner.run(["./build.sh"])
    assert result.outcome.spawn_error == "command not executable: ./build.sh (permission denied)"


def test_not_a_program_is_an_outcome(runner: Runner, tmp_path: Path) -> None:
    """EXEC-008: an executable file that is neither a binary nor a #! script."""
    script = tmp_path / "data.bin"
    script.write_bytes(b"\x00\x01\x02 not a program")
    script.chmod(0o755)
    result = runner.run(["./data.bin"])
    assert result.outcome.spawn_error == describe_exec_error("./data.bin", 8)  # ENOEXEC
    assert "not a binary" in (result.outcome.spawn_error or "")


def test_argument_list_too_long_is_an_outcome(runner: Runner) -> None:
    """EXEC-008: any other execve failure is reported with the system's reason."""
    result = runner.run(["echo", "x" * (256 * 1024)])
    assert result.outcome.spawn_error == "cannot run echo: Argument list too long"


def test_missing_working_directory_is_an_outcome(runner: Runner, tmp_path: Path) -> None:
    """EXEC-008: a working directory that does not exist fails the spawn with a message."""
    missing = tmp_path / "gone"
    result = runner.run(["true"], cwd=missing)
    assert result.outcome.spawn_error == f"working directory does not exist: {missing}"


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        ([], {}, "empty command"),
        (["echo", "a\0b"], {}, "command contains a NUL character: echo"),
        (["true"], {"A=B": "x"}, "invalid environment variable name: 'A=B'"),
        (["true"], {"": "x"}, "invalid environment variable name: ''"),
        (["true"], {"A": "x\0y"}, "environment variable A contains a NUL character"),
    ],
)
def test_invalid_requests_are_outcomes(
    runner: Runner, argv: list[str], env: dict[str, str], message: str
) -> None:
    """EXEC-008: what execve would reject is reported before spawning; spools exist, empty."""
    result = runner.run(argv, env=env)
    assert result.outcome.spawn_error == message
    assert result.stdout_spool == b""
    assert result.stderr_spool == b""


def test_timeout_escalates_to_sigkill_after_the_grace_period(runner: Runner) -> None:
    """SPEC §1 timeout + EXEC-013: SIGTERM is ignored, so SIGKILL follows the grace period."""
    # the timeout leaves a loaded machine time to start Python and install the handler
    result = runner.python(IGNORE_TERM, timeout_s=2.0, grace_period_s=0.2)
    assert result.outcome.timed_out
    assert not result.outcome.cancelled
    assert result.outcome.signal == signal.SIGKILL
    assert result.stdout == b"ready\n"  # output before the timeout is kept
    assert not result.outcome.succeeded


def test_timeout_sends_sigterm_first(runner: Runner) -> None:
    """EXEC-013: a command that exits on SIGTERM ends with it; still a timeout."""
    code = (
        "import signal, sys, time\n"
        "def on_term(*_):\n"
        "    print('got term', flush=True); sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, on_term)\n"
        "time.sleep(60)\n"
    )
    # the timeout leaves a loaded machine time to start Python and install the handler
    result = runner.python(code, timeout_s=2.0, grace_period_s=30)
    assert result.stdout == b"got term\n"
    assert result.outcome.timed_out
    assert result.outcome.exit_code == 0
    assert not result.outcome.succeeded  # exit 0 after a timeout is still a failure


def test_cancellation_before_start_spawns_nothing(runner: Runner) -> None:
    """EXEC-013: a task cancelled before it spawned is cancelled, never started."""
    cancel = Cancel()
    cancel.requested.set()
    result = asyncio.run(runner.arun(runner.request(["true"]), cancel=cancel))
    assert result.outcome.cancelled
    assert result.outcome.pid is None
    assert result.outcome.exit_code is None
    assert result.outcome.signal is None


def test_cancellation_kills_the_whole_process_tree(runner: Runner) -> None:
    """EXEC-008/EXEC-013: cancel → SIGTERM to the group; child and grandchild are gone after."""
    pids_file = runner.tmp / "pids"

    async def scenario() -> tuple[object, list[int]]:
        cancel = Cancel()
        running = asyncio.ensure_future(
            runner.arun(runner.request([PY, "-c", TREE, str(pids_file)]), cancel=cancel)
        )
        pids = [int(p) for p in (await wait_for_file(pids_file)).split()]
        assert all(pid_exists(p) for p in pids)
        cancel.requested.set()
        return (await running).outcome, pids

    outcome, pids = asyncio.run(scenario())
    assert outcome.cancelled  # type: ignore[attr-defined]
    assert outcome.signal == signal.SIGTERM  # type: ignore[attr-defined]
    assert [p for p in pids if pid_exists(p)] == []


@pytest.mark.timeout(30)
def test_kill_now_skips_the_grace_period(runner: Runner) -> None:
    """EXEC-015: a second interrupt kills at once, even with a long grace period."""

    async def scenario() -> object:
        cancel = Cancel()
        request = runner.request([PY, "-c", IGNORE_TERM], grace_period_s=600)
        chunks: list[bytes] = []
        ready = asyncio.Event()

        def on_stdout(chunk: bytes) -> None:
            chunks.append(chunk)
            ready.set()

        running = asyncio.ensure_future(runner.arun(request, cancel=cancel, on_stdout=on_stdout))
        await ready.wait()
        cancel.requested.set()
        await asyncio.sleep(0.1)
        cancel.kill_now.set()
        return (await running).outcome

    outcome = asyncio.run(scenario())
    assert outcome.cancelled  # type: ignore[attr-defined]
    assert outcome.signal == signal.SIGKILL  # type: ignore[attr-defined]


def test_cancelling_the_awaiting_task_kills_the_process(runner: Runner) -> None:
    """If the coroutine itself is cancelled, no process survives it."""
    pids_file = runner.tmp / "pids"

    async def scenario() -> list[int]:
        running = asyncio.ensure_future(
            runner.arun(runner.request([PY, "-c", TREE, str(pids_file)]))
        )
        pids = [int(p) for p in (await wait_for_file(pids_file)).split()]
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        return pids

    pids = asyncio.run(scenario())
    assert [p for p in pids if pid_exists(p)] == []


@linux_only
def test_escaped_session_does_not_survive_the_task(runner: Runner) -> None:
    """EXEC-008: a child that left the group with setsid is killed when the command exits."""
    pid_file = runner.tmp / "escaped"
    result = runner.run([PY, "-c", ESCAPE_AND_EXIT, str(pid_file)])
    assert result.outcome.exit_code == 0
    escaped = int(pid_file.read_text())
    assert not pid_exists(escaped)


@linux_only
def test_cancellation_reaches_an_orphaned_daemon(runner: Runner) -> None:
    """EXEC-008/EXEC-013: a double-forked daemon in its own session gets SIGTERM on cancel."""
    pid_file = runner.tmp / "daemon"

    async def scenario() -> tuple[object, int]:
        cancel = Cancel()
        request = runner.request([PY, "-c", DAEMONIZE_AND_WAIT, str(pid_file)])
        running = asyncio.ensure_future(runner.arun(request, cancel=cancel))
        daemon = int(await wait_for_file(pid_file))
        cancel.requested.set()
        return (await running).outcome, daemon

    outcome, daemon = asyncio.run(scenario())
    assert outcome.cancelled  # type: ignore[attr-defined]
    assert (runner.tmp / "daemon.term").read_text() == "term\n"
    assert not pid_exists(daemon)


def test_a_failing_callback_is_raised_after_the_process_ends(runner: Runner) -> None:
    """A broken observer neither stalls the pipe nor loses the spool; its error surfaces."""

    def broken(_: bytes) -> None:
        raise RuntimeError("observer bug")

    request = runner.request([PY, "-c", "print('a' * 100000)"])
    with pytest.raises(RuntimeError, match="observer bug"):
        asyncio.run(runner.arun(request, on_stdout=broken))
    assert request.stdout_spool.read_bytes() == b"a" * 100000 + b"\n"


def test_shell_action_runs_as_shell_dash_c(runner: Runner) -> None:
    """CACHE-005 shell actions are argv ``[shell, "-c", script]``, built by the caller."""
    result = runner.run(["sh", "-c", "echo out; echo err >&2; exit 4"])
    assert (result.stdout, result.stderr, result.outcome.exit_code) == (b"out\n", b"err\n", 4)


def test_concurrent_runs_keep_their_outputs_apart(runner: Runner, tmp_path: Path) -> None:
    """The spawner runs many processes at once on one event loop (the scheduler's use)."""

    async def one(index: int) -> tuple[int, bytes]:
        directory = tmp_path / str(index)
        directory.mkdir()
        request = SpawnRequest(
            argv=(PY, "-c", f"import sys\nfor _ in range(200): print({index})\nsys.exit({index})"),
            cwd=directory,
            env={},
            stdout_spool=directory / "out",
            stderr_spool=directory / "err",
            grace_period_s=0.2,
        )
        outcome = await runner.spawner.run(
            request, on_stdout=lambda _: None, on_stderr=lambda _: None, cancel=Cancel()
        )
        assert outcome.exit_code is not None
        return outcome.exit_code, request.stdout_spool.read_bytes()

    async def many() -> list[tuple[int, bytes]]:
        return list(await asyncio.gather(*(one(i) for i in range(6))))

    for index, (code, out) in enumerate(asyncio.run(many())):
        assert code == index
        assert out == f"{index}\n".encode() * 200


@pytest.mark.timeout(30)
def test_background_job_is_killed_when_the_command_exits(runner: Runner) -> None:
    """EXEC-008: ``cmd &`` left in the group (holding stdout open) dies with the command."""
    result = runner.run(["sh", "-c", "sleep 60 & echo $!"])
    assert result.outcome.exit_code == 0
    background = int(result.stdout)
    assert not pid_exists(background)


@linux_only
@pytest.mark.timeout(30)
def test_process_tree_dies_with_haz(tmp_path: Path) -> None:
    """EXEC-008: if haz itself is killed, its supervisors kill the task trees (no survivors)."""
    pids_file = tmp_path / "pids"
    haz = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from hazremote.execute.spawn import SpawnRequest, SubprocessSpawner\n"
        "class Cancel:\n"
        "    def __init__(self):\n"
        "        self.requested, self.kill_now = asyncio.Event(), asyncio.Event()\n"
        "async def main():\n"
        "    tmp = Path(sys.argv[1])\n"
        "    request = SpawnRequest(argv=(sys.executable, '-c', sys.argv[2], sys.argv[3]),\n"
        "        cwd=tmp, env={'PATH': sys.argv[4]}, stdout_spool=tmp / 'o',\n"
        "        stderr_spool=tmp / 'e')\n"
        "    await SubprocessSpawner().run(request, on_stdout=lambda _: None,\n"
        "        on_stderr=lambda _: None, cancel=Cancel())\n"
        "asyncio.run(main())\n"
    )
    proc = subprocess.Popen(
        [PY, "-c", haz, str(tmp_path), TREE, str(pids_file), SYSTEM_PATH],
        cwd=Path(__file__).parents[2],
    )
    try:
        pids = [int(p) for p in asyncio.run(wait_for_file(pids_file)).split()]
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 10
    while any(pid_exists(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [p for p in pids if pid_exists(p)] == []


def test_unstartable_supervisor_is_an_outcome(tmp_path: Path) -> None:
    """EXEC-008: if even the supervisor cannot start, the task fails with a message."""
    runner = Runner(tmp=tmp_path, spawner=SubprocessSpawner(python=str(tmp_path / "no-python")))
    result = runner.run(["true"])
    assert (result.outcome.spawn_error or "").startswith("cannot start the process supervisor")


def test_spool_write_failure_is_raised_after_the_run(runner: Runner, tmp_path: Path) -> None:
    """A spool that cannot be written (a full disk) raises OSError once the process is done."""
    if not Path("/dev/full").exists():
        pytest.skip("needs /dev/full")
    request = SpawnRequest(
        argv=(PY, "-c", "print('x' * 100000)"),
        cwd=tmp_path,
        env={},
        stdout_spool=Path("/dev/full"),
        stderr_spool=tmp_path / "err",
    )
    seen: list[bytes] = []
    with pytest.raises(OSError, match="No space left"):
        asyncio.run(
            runner.spawner.run(
                request, on_stdout=seen.append, on_stderr=seen.append, cancel=Cancel()
            )
        )
    assert b"".join(seen) == b"x" * 100000 + b"\n"  # the command was not cut off by SIGPIPE
