"""Task locks: two ``haz run`` in one workspace never write one task's outputs at once.

Spec coverage:
* SPEC §1 ``lock`` — without ``lock: true``, a task's restore and its run + store hold its lock.
* SPEC §1 ``lock`` — :class:`TaskLocks`: an exclusive ``flock`` on ``.haz/locks/<digest>.lock``.
* SPEC §1 ``lock`` — a waiting run names the other on stderr (:func:`describe_other_runs`).
* EXEC-012..015 — waiting never blocks the event loop and ends at once on cancellation.
Out of scope: ``lock: true`` (:func:`hazremote.cli.run.workspace_lock`) and when to lock
(:mod:`hazremote.execute.lifecycle`).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from hazremote.domain.refs import TaskId

__all__ = [
    "HeldLock",
    "NoTaskLocks",
    "TaskLockPort",
    "TaskLocks",
    "describe_other_runs",
    "holder_description",
]

#: Polling interval while another run holds a task's lock (grows to the maximum).
_POLL_MIN_S = 0.02
_POLL_MAX_S = 0.2
_OPEN_FLAGS = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
_RUN_PREFIX = "run-"


class CancelSignal(Protocol):
    """The part of the run's cancellation a waiter watches (``Cancellation`` has it)."""

    @property
    def requested(self) -> asyncio.Event: ...


class HeldLock(Protocol):
    """A task lock this run holds; :meth:`release` is idempotent."""

    @property
    def waited(self) -> bool:
        """True when another run held the lock first (its result is probably stored now)."""
        ...

    def release(self) -> None: ...


class TaskLockPort(Protocol):
    """How the lifecycle takes task locks."""

    def try_claim(self, task: TaskId) -> HeldLock | None:
        """The lock of ``task`` if it is free now (never blocks), else ``None``."""
        ...

    async def claim(self, task: TaskId, cancel: CancelSignal) -> HeldLock | None:
        """The lock of ``task``, waiting for another run if needed; ``None`` when the run was
        cancelled meanwhile."""
        ...


def holder_description(argv: Sequence[str] | None = None) -> str:
    """``haz run …`` as this process was started (``argv[0]`` shortened to ``haz``)."""
    args = list(sys.argv if argv is None else argv)
    return shlex.join(["haz", *args[1:]])


class _Held:
    def __init__(self, fd: int, *, waited: bool) -> None:
        self._fd: int | None = fd
        self._waited = waited

    @property
    def waited(self) -> bool:
        return self._waited

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor releases the flock
            self._fd = None


class _Unlocked:
    """What a claim returns when the workspace cannot hold lock files (read-only ``.haz``)."""

    waited = False

    def release(self) -> None:
        return None


class NoTaskLocks:
    """No locking at all (library use of the lifecycle, and tests of single runs)."""

    def try_claim(self, task: TaskId) -> HeldLock | None:
        return _Unlocked()

    async def claim(self, task: TaskId, cancel: CancelSignal) -> HeldLock | None:
        return _Unlocked()


class TaskLocks:
    """Task locks under ``directory`` (``.haz/locks``) for one run.

    Locks die with their process (``flock`` on a close-on-exec descriptor, never inherited by
    a task), so a SIGKILLed run never blocks the next one. Each run publishes one description
    of itself, ``run-<pid>.json``, held under a shared ``flock`` for its lifetime.

    Args:
        directory: Where the lock files live; created on first use.
        notify: Prints one line on stderr (called on the event loop only).
        command: How this run is described to others waiting for it.
        clock: Monotonic clock.
    """

    def __init__(
        self,
        directory: Path,
        *,
        notify: Callable[[str], None],
        command: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._dir = directory
        self._dir_str = str(directory)  # lock paths are built per task: no pathlib there
        self._notify = notify
        self._command = holder_description() if command is None else command
        self._clock = clock
        self._run_fd: int | None = None
        self._usable = True
        self._names: dict[TaskId, str] = {}
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self._publish_self()
        except OSError:
            self._usable = False  # a read-only workspace: nothing can be written anyway

    def close(self) -> None:
        """Withdraw this run's description (its flock ends with the process regardless)."""
        if self._run_fd is not None:
            with contextlib.suppress(OSError):
                (self._dir / f"{_RUN_PREFIX}{os.getpid()}.json").unlink()
            os.close(self._run_fd)
            self._run_fd = None

    def _publish_self(self) -> None:
        path = self._dir / f"{_RUN_PREFIX}{os.getpid()}.json"
        fd = os.open(path, _OPEN_FLAGS | os.O_TRUNC, 0o644)
        fcntl.flock(fd, fcntl.LOCK_SH)
        document = {"pid": os.getpid(), "command": self._command, "started": time.time()}
        os.write(fd, json.dumps(document).encode() + b"\n")
        self._run_fd = fd

    def _path(self, task: TaskId) -> str:
        name = self._names.get(task)
        if name is None:
            digest = hashlib.sha256(str(task).encode()).hexdigest()[:32]
            name = self._names[task] = f"{self._dir_str}/{digest}.lock"
        return name

    def _try(self, path: str) -> int | None:
        fd = os.open(path, _OPEN_FLAGS, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        return fd

    def try_claim(self, task: TaskId) -> HeldLock | None:
        if not self._usable:
            return _Unlocked()
        try:
            fd = self._try(self._path(task))
        except OSError:
            return _Unlocked()  # cannot lock here: behave as before locks existed
        return None if fd is None else _Held(fd, waited=False)

    async def claim(self, task: TaskId, cancel: CancelSignal) -> HeldLock | None:
        held = self.try_claim(task)
        if held is not None:
            return held
        path = self._path(task)
        self._notify(f"haz: waiting for {task}: {self._holder(path)} is running or restoring it…")
        delay = _POLL_MIN_S
        while True:
            if cancel.requested.is_set():
                return None
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(cancel.requested.wait(), timeout=delay)
            if cancel.requested.is_set():
                return None
            delay = min(delay * 2, _POLL_MAX_S)
            try:
                fd = self._try(path)
            except OSError:
                return _Unlocked()
            if fd is not None:
                return _Held(fd, waited=True)

    # -- naming the other run -------------------------------------------------------------
    def _holder(self, path: str) -> str:
        """Who holds ``path``: "another haz run (pid N: haz run …)", as precisely as this
        platform allows."""
        pid = _flock_holder(path)
        if pid is not None and pid != os.getpid():
            command = _live_runs(self._dir).get(pid)
            return f"another haz run (pid {pid}: {command})" if command else f"pid {pid}"
        return describe_other_runs(self._dir)


def describe_other_runs(directory: Path) -> str:
    """The other live runs of the workspace whose lock directory is ``directory``, as
    "another haz run (pid N: haz run …)".

    A waiter finds the holding pid in ``/proc/locks`` where there is one; otherwise this
    names every other live run.
    """
    others = {p: c for p, c in _live_runs(directory).items() if p != os.getpid()}
    if len(others) == 1:
        ((pid, command),) = others.items()
        return f"another haz run (pid {pid}: {command})"
    if others:
        listed = "; ".join(f"pid {p}: {c}" for p, c in sorted(others.items()))
        return f"another haz run (one of {listed})"
    return "another haz run"


def _live_runs(directory: Path) -> dict[int, str]:
    """pid → command of every run whose description is still held (stale ones removed)."""
    runs: dict[int, str] = {}
    try:
        entries = list(directory.glob(f"{_RUN_PREFIX}*.json"))
    except OSError:
        return runs
    for entry in entries:
        try:
            fd = os.open(entry, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                document = json.loads(os.read(fd, 1 << 16) or b"{}")
                runs[int(document["pid"])] = str(document["command"])
            else:  # nobody holds it: that run is gone
                with contextlib.suppress(OSError):
                    entry.unlink()
        except (OSError, ValueError, KeyError, TypeError):
            continue
        finally:
            os.close(fd)
    return runs


def _flock_holder(path: str) -> int | None:
    """The pid holding a flock on ``path`` according to ``/proc/locks`` (Linux), or None."""
    try:
        info = os.stat(path)
        with open("/proc/locks") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    suffix = f":{info.st_ino}"
    for line in lines:
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF" (blocked waiters carry "->")
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5].endswith(suffix):
            major, minor = (int(part, 16) for part in fields[5].split(":")[:2])
            if (major, minor) == (os.major(info.st_dev), os.minor(info.st_dev)):
                with contextlib.suppress(ValueError):
                    return int(fields[4])
    return None
