"""Task locks (:mod:`hazremote.execute.locks`): contention, waiting, cancellation, naming.

Spec coverage: SPEC §1 ``lock`` absent (concurrent runs wait only for shared tasks),
EXEC-012..015 (a wait ends at once on cancellation), locks die with their process.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

from hazremote.domain.refs import TaskId
from hazremote.execute.locks import TaskLocks, describe_other_runs

TASK = TaskId("lib", "build")


class _Cancel:
    def __init__(self) -> None:
        self.requested = asyncio.Event()


def test_a_held_task_is_busy_for_another_holder_and_free_after_release(tmp_path: Path) -> None:
    one = TaskLocks(tmp_path, notify=print, command="haz run a")
    two = TaskLocks(tmp_path, notify=print, command="haz run b")
    held = one.try_claim(TASK)
    assert held is not None
    assert not held.waited
    assert two.try_claim(TASK) is None
    assert two.try_claim(TaskId("lib", "test")) is not None  # other tasks are independent
    held.release()
    held.release()  # idempotent
    again = two.try_claim(TASK)
    assert again is not None
    again.release()
    one.close()
    two.close()


def test_claim_waits_for_the_holder_says_so_once_and_reports_that_it_waited(
    tmp_path: Path,
) -> None:
    notes: list[str] = []
    one = TaskLocks(tmp_path, notify=print, command="haz run a")
    two = TaskLocks(tmp_path, notify=notes.append, command="haz run b")
    held = one.try_claim(TASK)
    assert held is not None

    async def scenario() -> bool:
        loop = asyncio.get_running_loop()
        loop.call_later(0.2, held.release)
        claimed = await two.claim(TASK, _Cancel())
        assert claimed is not None
        claimed.release()
        return claimed.waited

    assert asyncio.run(scenario()) is True
    assert len(notes) == 1
    assert notes[0].startswith("haz: waiting for lib:build: ")


def test_a_wait_ends_at_once_when_the_run_is_cancelled(tmp_path: Path) -> None:
    one = TaskLocks(tmp_path, notify=print)
    two = TaskLocks(tmp_path, notify=lambda _: None)
    held = one.try_claim(TASK)
    assert held is not None

    async def scenario() -> object:
        cancel = _Cancel()
        asyncio.get_running_loop().call_later(0.1, cancel.requested.set)
        return await two.claim(TASK, cancel)

    assert asyncio.run(scenario()) is None
    held.release()


_HOLDER = """
import sys, time
from pathlib import Path
from hazremote.domain.refs import TaskId
from hazremote.execute.locks import TaskLocks
locks = TaskLocks(Path(sys.argv[1]), notify=print, command="haz run lib:build --force")
held = locks.try_claim(TaskId("lib", "build"))
print("held", flush=True)
time.sleep(60)
"""


def test_the_waiter_names_the_other_process_and_a_killed_holder_frees_the_task(
    tmp_path: Path,
) -> None:
    """The message carries the holder's pid and command line; SIGKILL releases everything."""
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        expected = f"another haz run (pid {holder.pid}: haz run lib:build --force)"
        assert describe_other_runs(tmp_path) == expected
        notes: list[str] = []
        waiter = TaskLocks(tmp_path, notify=notes.append, command="haz run x")
        assert waiter.try_claim(TASK) is None

        async def scenario() -> bool:
            asyncio.get_running_loop().call_later(0.2, holder.kill)
            claimed = await waiter.claim(TASK, _Cancel())
            assert claimed is not None
            claimed.release()
            return claimed.waited

        assert asyncio.run(scenario()) is True
        assert notes == [f"haz: waiting for lib:build: {expected} is running or restoring it…"]
    finally:
        holder.kill()
        holder.wait()
    deadline = time.monotonic() + 5
    while describe_other_runs(tmp_path) != "another haz run":  # its description is stale now
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert not list(tmp_path.glob(f"run-{holder.pid}.json"))  # and removed


def test_an_unwritable_lock_directory_means_no_locking(tmp_path: Path) -> None:
    blocker = tmp_path / "locks"
    blocker.write_text("a file where the directory should be")
    locks = TaskLocks(blocker, notify=print)
    first, second = locks.try_claim(TASK), locks.try_claim(TASK)
    assert first is not None
    assert second is not None
