"""Running one process for a task: the ``ProcessSpawner`` port and its subprocess adapter.

The adapter starts a small supervisor per task (:mod:`hazremote.execute._reaper`), which
starts the command and reports its exit over a control socket. Output flows from the command
straight into pipes read here: every chunk is appended to a spool file, hashed on the fly when
asked, and passed to the caller's callback.

Spec coverage:
* EXEC-008 — :class:`SubprocessSpawner`: cwd, the exact env, stdin ``/dev/null``, own group.
* EXEC-008 — descendants are tracked as a child subreaper; none survive the task.
* EXEC-008 — stdout/stderr spooled in full; a start failure is :attr:`ProcessOutcome.spawn_error`.
* EXEC-009 — :class:`ProcessOutcome`: exit code, signal, ``timed_out``, ``cancelled`` (facts).
* EXEC-012..015 — SIGTERM to the group and escaped descendants, SIGKILL after the grace period.
* EXEC-012..015 — ``kill_now`` (a second SIGINT) kills at once; a timeout takes the same path.
Out of scope: argv from an action (the caller's), the environment (:mod:`hazremote.keys`),
classification, the cache, remote execution.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from hazremote.domain.digest import Digest, Hasher, new_hasher
from hazremote.domain.model import DEFAULT_GRACE_PERIOD_S, HashName
from hazremote.execute import _reaper

__all__ = [
    "CancelSignal",
    "OutputCallback",
    "ProcessOutcome",
    "ProcessSpawner",
    "SpawnRequest",
    "SubprocessSpawner",
    "describe_exec_error",
]

OutputCallback = Callable[[bytes], None]

#: How long a supervisor may take to exit after ``kill`` before haz SIGKILLs it and the group.
SUPERVISOR_KILL_GRACE_S = 5.0
#: How long output pipes may stay open after the supervisor exited (only a descendant that
#: escaped tracking, on a platform without a subreaper, could hold them) before haz stops reading.
DRAIN_TIMEOUT_S = 5.0

_REAPER_PATH = str(Path(_reaper.__file__).resolve())


@dataclass(frozen=True, slots=True, kw_only=True)
class SpawnRequest:
    """One process to run.

    Attributes:
        argv: Program and arguments; a bare program name is looked up on ``env["PATH"]``
            (the task's ``PATH``, not haz's; ``/bin:/usr/bin`` when it has none).
        cwd: Working directory (the project root, EXEC-008).
        env: The complete environment of the process: nothing else is inherited.
        stdout_spool: File that receives every stdout byte (created or truncated).
        stderr_spool: File that receives every stderr byte (created or truncated).
        timeout_s: Executor-imposed limit; ``None`` for none.
        grace_period_s: SIGTERM → SIGKILL delay on timeout or cancellation.
        hash_name: When set, the outcome carries the digests of both streams.
    """

    argv: tuple[str, ...]
    cwd: Path
    env: Mapping[str, str]
    stdout_spool: Path
    stderr_spool: Path
    timeout_s: float | None = None
    grace_period_s: float = DEFAULT_GRACE_PERIOD_S
    hash_name: HashName | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessOutcome:
    """What happened to the process (EXEC-009 facts, not yet a classification).

    Exactly one of ``exit_code``, ``signal`` and ``spawn_error`` is set, except for a request
    cancelled before it started (all three ``None``, ``cancelled`` true). ``timed_out`` and
    ``cancelled`` say haz stopped the process; the exit code or signal is then whatever the
    process ended with (often SIGTERM or SIGKILL) and the task counts as failed / cancelled
    regardless of it.

    Attributes:
        exit_code: The command's exit status when it exited normally.
        signal: The signal number that killed the command.
        timed_out: haz stopped the command because ``timeout_s`` elapsed.
        cancelled: haz stopped the command because cancellation was requested.
        spawn_error: Why the command could not run at all, e.g. ``command not found: x``.
        duration_s: Wall time from spawning to the command's end.
        pid: The command's process id, when it started.
        stdout_size: Bytes written to the stdout spool.
        stderr_size: Bytes written to the stderr spool.
        stdout_digest: Digest of stdout when the request named a hash function.
        stderr_digest: Digest of stderr when the request named a hash function.
    """

    exit_code: int | None = None
    signal: int | None = None
    timed_out: bool = False
    cancelled: bool = False
    spawn_error: str | None = None
    duration_s: float = 0.0
    pid: int | None = None
    stdout_size: int = 0
    stderr_size: int = 0
    stdout_digest: Digest | None = None
    stderr_digest: Digest | None = None

    @property
    def succeeded(self) -> bool:
        """Exit 0 and not stopped by haz: the only outcome that may be stored (EXEC-009)."""
        return self.exit_code == 0 and not self.timed_out and not self.cancelled


class CancelSignal(Protocol):
    """The run's cancellation state (EXEC-012..015), as the scheduler's ``Cancellation`` has it.

    ``requested`` means stop gracefully (SIGTERM, then SIGKILL after the grace period);
    ``kill_now`` means SIGKILL at once. Either one set before :meth:`ProcessSpawner.run` starts
    means the process is never spawned.
    """

    @property
    def requested(self) -> asyncio.Event: ...

    @property
    def kill_now(self) -> asyncio.Event: ...


class ProcessSpawner(Protocol):
    """Port: run one process to completion, streaming its output (EXEC-008)."""

    async def run(
        self,
        request: SpawnRequest,
        *,
        on_stdout: OutputCallback,
        on_stderr: OutputCallback,
        cancel: CancelSignal,
    ) -> ProcessOutcome:
        """Run ``request``; never raises for a command that cannot start.

        ``on_stdout``/``on_stderr`` receive raw chunks (arbitrary boundaries, byte-exact) as
        they arrive; the spools receive the same bytes. If the awaiting task is itself
        cancelled, the process tree is killed before the cancellation propagates.

        Raises:
            OSError: when a spool file cannot be written.
        """
        ...


def describe_exec_error(program: str, code: int) -> str:
    """The user-facing message for a failed ``execve`` of ``program`` (EXEC-008)."""
    if code in (errno.ENOENT, errno.ENOTDIR):
        return f"command not found: {program}"
    if code == errno.EACCES:
        return f"command not executable: {program} (permission denied)"
    if code == errno.ENOEXEC:
        return f"command not executable: {program} (not a binary and no #! line)"
    return f"cannot run {program}: {os.strerror(code)}"


def _request_problem(request: SpawnRequest) -> str | None:
    """Problems found before spawning (each would otherwise fail deep inside ``execve``)."""
    if not request.argv or not request.argv[0]:
        return "empty command"
    if any("\0" in arg for arg in request.argv):
        return f"command contains a NUL character: {request.argv[0]}"
    for name, value in request.env.items():
        if not name or "=" in name or "\0" in name:
            return f"invalid environment variable name: {name!r}"
        if "\0" in value:
            return f"environment variable {name} contains a NUL character"
    if not request.cwd.is_dir():
        return f"working directory does not exist: {request.cwd}"
    return None


class _Capture(asyncio.Protocol):
    """Reads one output pipe: spool file, size, digest and callback, chunk by chunk."""

    def __init__(self, spool: BinaryIO, callback: OutputCallback, hasher: Hasher | None) -> None:
        self.spool = spool
        self.callback: OutputCallback | None = callback
        self.hasher = hasher
        self.size = 0
        self.spool_error: OSError | None = None
        self.callback_error: Exception | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        # Spool first: the file is the record of the run and must not depend on observers.
        # Failures are kept for the end: raising here would close the pipe and kill the
        # command with SIGPIPE, so reading goes on and the run ends normally first.
        if self.spool_error is None:
            try:
                self.spool.write(data)
            except OSError as error:
                self.spool_error = error
        self.size += len(data)
        if self.hasher is not None:
            self.hasher.update(data)
        if self.callback is not None:
            try:
                self.callback(data)
            except Exception as error:  # a broken observer must not stall the pipe
                self.callback_error, self.callback = error, None

    @property
    def error(self) -> BaseException | None:
        return self.spool_error or self.callback_error

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def digest(self) -> Digest | None:
        return None if self.hasher is None else Digest(self.hasher.digest())


class _Status:
    """The supervisor's reports, read from the control socket until it closes."""

    def __init__(self) -> None:
        self.pid: int | None = None
        self.exec_errno: int | None = None
        self.exit_code: int | None = None
        self.signal: int | None = None
        self.ended_at: float | None = None

    async def read(self, reader: asyncio.StreamReader) -> None:
        while line := await reader.readline():
            kind, _, rest = line.decode("ascii", "replace").strip().partition(" ")
            if kind == _reaper.MSG_STARTED:
                self.pid = int(rest)
            elif kind == _reaper.MSG_ERROR:
                self.exec_errno = int(rest)
                self.ended_at = time.monotonic()
            elif kind == _reaper.MSG_EXIT:
                self.exit_code = int(rest)
                self.ended_at = time.monotonic()
            elif kind == _reaper.MSG_SIGNAL:
                self.signal = int(rest)
                self.ended_at = time.monotonic()


class SubprocessSpawner:
    """:class:`ProcessSpawner` over local processes (POSIX; the subreaper needs Linux).

    Args:
        python: Interpreter that runs the supervisor script.
        supervisor_env: Environment of the supervisor process itself (so its interpreter
            starts; it never reaches the command). Defaults to haz's environment at
            construction time.
    """

    def __init__(
        self, *, python: str = sys.executable, supervisor_env: Mapping[str, str] | None = None
    ) -> None:
        self._python = python
        self._supervisor_env = dict(os.environ if supervisor_env is None else supervisor_env)

    async def run(
        self,
        request: SpawnRequest,
        *,
        on_stdout: OutputCallback,
        on_stderr: OutputCallback,
        cancel: CancelSignal,
    ) -> ProcessOutcome:
        """See :meth:`ProcessSpawner.run`."""
        with request.stdout_spool.open("wb") as out_spool, request.stderr_spool.open("wb") as err:
            hash_name = request.hash_name
            out = _Capture(out_spool, on_stdout, new_hasher(hash_name) if hash_name else None)
            err_capture = _Capture(err, on_stderr, new_hasher(hash_name) if hash_name else None)
            outcome = await self._run(request, out, err_capture, cancel)
        for capture in (out, err_capture):
            if capture.error is not None:
                raise capture.error
        return outcome

    async def _run(
        self, request: SpawnRequest, out: _Capture, err: _Capture, cancel: CancelSignal
    ) -> ProcessOutcome:
        def outcome(
            *,
            exit_code: int | None = None,
            signal_number: int | None = None,
            spawn_error: str | None = None,
            pid: int | None = None,
            duration_s: float = 0.0,
            timed_out: bool = False,
            cancelled: bool = False,
        ) -> ProcessOutcome:
            return ProcessOutcome(
                exit_code=exit_code,
                signal=signal_number,
                timed_out=timed_out,
                cancelled=cancelled,
                spawn_error=spawn_error,
                duration_s=duration_s,
                pid=pid,
                stdout_size=out.size,
                stderr_size=err.size,
                stdout_digest=out.digest(),
                stderr_digest=err.digest(),
            )

        if cancel.requested.is_set() or cancel.kill_now.is_set():
            return outcome(cancelled=True)
        problem = _request_problem(request)
        if problem is not None:
            return outcome(spawn_error=problem)

        loop = asyncio.get_running_loop()
        started = time.monotonic()
        ctl_parent, ctl_child = socket.socketpair()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            proc = await asyncio.create_subprocess_exec(
                self._python,
                "-I",
                "-S",
                _REAPER_PATH,
                stdin=ctl_child.fileno(),
                stdout=out_w,
                stderr=err_w,
                cwd=request.cwd,
                env=self._supervisor_env,
                start_new_session=True,
            )
        except OSError as error:
            for fd in (out_r, err_r):
                os.close(fd)
            ctl_parent.close()
            if not request.cwd.is_dir():
                return outcome(spawn_error=f"working directory does not exist: {request.cwd}")
            return outcome(spawn_error=f"cannot start the process supervisor: {error}")
        finally:
            ctl_child.close()
            os.close(out_w)
            os.close(err_w)

        transports: list[asyncio.ReadTransport] = []
        pipes = [os.fdopen(fd, "rb", buffering=0) for fd in (out_r, err_r)]
        try:
            for pipe, capture in zip(pipes, (out, err), strict=True):
                transport, _ = await loop.connect_read_pipe(
                    lambda capture=capture: capture,  # type: ignore[misc]
                    pipe,
                )
                transports.append(transport)
            reader, writer = await asyncio.open_unix_connection(sock=ctl_parent)
        except BaseException:
            # Without its control socket the supervisor cannot be told anything: end it now.
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
            for pipe in pipes:
                pipe.close()
            ctl_parent.close()
            raise
        status = _Status()
        run = _Supervision(proc=proc, writer=writer, status=status)
        reading = asyncio.ensure_future(status.read(reader))
        try:
            writer.write(_encode_request(request))
            await run.supervise(request, reading, cancel, started)
            await _drain(out, err, transports)
        except BaseException:
            await run.abort()
            for transport in transports:
                transport.close()
            raise
        finally:
            reading.cancel()
            writer.close()

        ended = status.ended_at if status.ended_at is not None else time.monotonic()
        signal_number, spawn_error = status.signal, None
        if status.exec_errno is not None:
            spawn_error = describe_exec_error(request.argv[0], status.exec_errno)
        elif status.exit_code is None and signal_number is None:
            if run.hard_killed:  # the supervisor died with the command: no report came
                signal_number = signal.SIGKILL
            else:
                spawn_error = f"the process supervisor failed (exit status {proc.returncode})"
        return outcome(
            exit_code=status.exit_code,
            signal_number=signal_number,
            spawn_error=spawn_error,
            pid=status.pid,
            duration_s=ended - started,
            timed_out=run.timed_out,
            cancelled=run.cancelled,
        )


def _encode_request(request: SpawnRequest) -> bytes:
    # fsencode restores undecodable bytes that os.environ carried as surrogate escapes.
    argv = [os.fsencode(arg) for arg in request.argv]
    env = [os.fsencode(name) + b"=" + os.fsencode(value) for name, value in request.env.items()]
    return _reaper.encode_request(argv, env)


async def _drain(out: _Capture, err: _Capture, transports: list[asyncio.ReadTransport]) -> None:
    """Read the pipes to their end; give up when something outside our tree holds them."""
    try:
        await asyncio.wait_for(asyncio.gather(out.closed, err.closed), DRAIN_TIMEOUT_S)
    except TimeoutError:
        for transport in transports:
            transport.close()


class _Supervision:
    """The stop logic of one run: timeout, graceful cancel, kill now, hard kill."""

    def __init__(
        self,
        *,
        proc: asyncio.subprocess.Process,
        writer: asyncio.StreamWriter,
        status: _Status,
    ) -> None:
        self.proc = proc
        self.writer = writer
        self.status = status
        self.timed_out = False
        self.cancelled = False
        self.hard_killed = False
        self.term_at: float | None = None
        self.kill_at: float | None = None

    def _send(self, command: str) -> None:
        # If the supervisor is gone already, its exit is handled by the caller.
        with contextlib.suppress(OSError, RuntimeError):
            self.writer.write(command.encode("ascii") + b"\n")

    def _term(self) -> None:
        self.term_at = time.monotonic()
        self._send(_reaper.CMD_TERM)

    def _kill(self) -> None:
        self.kill_at = time.monotonic()
        self._send(_reaper.CMD_KILL)

    def _hard_kill(self) -> None:
        """The supervisor did not finish after ``kill``: SIGKILL its session and the command."""
        self.hard_killed = True
        if self.proc.returncode is not None:
            return  # already reaped: its pid may belong to someone else now
        for pgid in (self.proc.pid, self.status.pid):
            if pgid is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, signal.SIGKILL)

    async def supervise(
        self,
        request: SpawnRequest,
        reading: asyncio.Future[None],
        cancel: CancelSignal,
        started: float,
    ) -> None:
        deadline = None if request.timeout_s is None else started + request.timeout_s
        exited = asyncio.ensure_future(self.proc.wait())
        requested = asyncio.ensure_future(cancel.requested.wait())
        kill_now = asyncio.ensure_future(cancel.kill_now.wait())
        try:
            while not exited.done():
                now = time.monotonic()
                stopping = self.term_at is not None or self.kill_at is not None
                if not stopping and self.status.ended_at is None:
                    if kill_now.done():
                        self.cancelled = True
                        self._kill()
                    elif requested.done():
                        self.cancelled = True
                        self._term()
                    elif deadline is not None and now >= deadline:
                        self.timed_out = True
                        self._term()
                grace_over = (
                    self.term_at is not None and now >= self.term_at + request.grace_period_s
                )
                if (
                    self.term_at is not None
                    and self.kill_at is None
                    and (kill_now.done() or grace_over)
                ):
                    self._kill()
                if (
                    self.kill_at is not None
                    and not self.hard_killed
                    and now >= self.kill_at + SUPERVISOR_KILL_GRACE_S
                ):
                    self._hard_kill()
                wake: list[float] = []
                waiters: set[asyncio.Future[object]] = {exited}  # type: ignore[arg-type]
                if self.term_at is None and self.kill_at is None:
                    waiters |= {requested, kill_now}  # type: ignore[arg-type]
                    if deadline is not None:
                        wake.append(deadline)
                elif self.kill_at is None:
                    waiters.add(kill_now)  # type: ignore[arg-type]
                    assert self.term_at is not None
                    wake.append(self.term_at + request.grace_period_s)
                elif not self.hard_killed:
                    wake.append(self.kill_at + SUPERVISOR_KILL_GRACE_S)
                timeout = max(0.0, min(wake) - time.monotonic()) if wake else None
                await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            # The supervisor reports before it exits; the socket may still hold the last line.
            await asyncio.wait({reading}, timeout=DRAIN_TIMEOUT_S)
        finally:
            for future in (exited, requested, kill_now):
                future.cancel()

    async def abort(self) -> None:
        """The awaiting task was cancelled or failed: kill the tree, wait briefly, hard kill."""
        if self.proc.returncode is not None:
            return
        self._kill()
        try:
            await asyncio.wait_for(asyncio.shield(self.proc.wait()), SUPERVISOR_KILL_GRACE_S)
        except (TimeoutError, asyncio.CancelledError):
            self._hard_kill()
