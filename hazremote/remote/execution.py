"""Remote execution, client side: the :class:`ExecutionClient` port and :class:`RemoteExecutor`.

The executor builds a :class:`~.action.RemoteAction` from an
:class:`~hazremote.execute.executor.ActionRequest`, uploads the inputs the service lacks,
submits the action and follows its updates; a success hands back the worker's manifest
document, which the lifecycle restores exactly like a remote cache hit.

Spec coverage:
* RX-001 — a request's ``remote`` policy: ``never`` runs locally; ``auto`` falls back to the
  local executor when no worker can take the task, the service is unreachable or the
  execution was lost (one warning per episode, RC-003 style); ``always`` waits for a worker
  (a visible notice) and resubmits a lost execution.
* RX-002 — inputs (digest, size, mode; sorted) and the hard predecessors' output files are
  uploaded with find-missing before the action (key and CACHE-011 key components) is sent.
* RX-005 — log chunks reach ``on_stdout``/``on_stderr`` as they arrive; a new attempt
  (offsets restart at 0) discards the spooled streams of the previous one.
* RX-007 — the cancel token sends ``CancelExecution``; a dropped stream re-attaches with
  ``WaitExecution``.
* RX-008 — exit 0: the manifest document is handed back (restored like a remote hit);
  nonzero: exit code and streams reported, nothing stored.
Out of scope: the gRPC implementation of the port (converts at the edge), restoring the
outputs (:meth:`hazremote.cache.tiers.CacheTiers.fetch_executed`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import stat
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol

from hazremote.cache.collect import StoredBlob
from hazremote.cache.manifest import Compression, RecordedKeyComponents
from hazremote.domain.digest import Digest, new_hasher
from hazremote.domain.model import RemotePolicy
from hazremote.errors import HazError
from hazremote.execute.executor import ActionRequest, ExecutionOutcome, Executor
from hazremote.execute.spawn import CancelSignal, OutputCallback, ProcessOutcome
from hazremote.remote.action import ActionInput, Platform, PredecessorOutputs, RemoteAction
from hazremote.remote.updates import (
    Cancelled,
    Completed,
    ExecutionUpdate,
    Failed,
    FailureReason,
    Leased,
    LogChunk,
    LogStream,
    Queued,
)

if TYPE_CHECKING:
    from hazremote.remote.transfer import TransferError

__all__ = [
    "WAIT_NOTICE_S",
    "Cancelled",
    "Completed",
    "ExecutionClient",
    "ExecutionUnavailable",
    "ExecutionUpdate",
    "Failed",
    "FailureReason",
    "InputUploader",
    "Leased",
    "LogChunk",
    "LogStream",
    "Queued",
    "RemoteExecutor",
    "existing_output_parents",
]

#: How long an ``always`` execution may stay queued before "waiting for a worker" is shown.
WAIT_NOTICE_S = 2.0
#: ``always``: how many times a lost execution (or an unreachable service) is resubmitted.
_ALWAYS_RETRIES = 3
#: Re-attachments (``WaitExecution``) after a dropped stream, per submission.
_REATTACH = 2


class ExecutionUnavailable(HazError):
    """The service could not be reached, or the update stream broke (a remote reason)."""


class ExecutionClient(Protocol):
    """The ``Execution`` service as the client uses it, in domain values.

    The iterators raise :class:`ExecutionUnavailable` when the call fails or the stream
    breaks; a finished execution ends its iterator after its last update.
    """

    def execute(
        self, action: RemoteAction, *, wait_for_worker: bool
    ) -> AsyncIterator[ExecutionUpdate]:
        """Submit ``action``; its updates (``Queued`` first)."""
        ...

    def wait(self, execution_id: str) -> AsyncIterator[ExecutionUpdate]:
        """Re-attach to a running execution."""
        ...

    async def cancel(self, execution_id: str) -> bool:
        """Ask the service to cancel; True when it did (False: unknown, or others wait)."""
        ...


class InputUploader(Protocol):
    """What the executor needs of :class:`~hazremote.remote.transfer.BlobTransfer` (RX-002)."""

    async def find_missing(self, blobs: Mapping[Digest, int]) -> set[Digest] | TransferError: ...

    async def upload(self, blobs: Sequence[StoredBlob]) -> TransferError | None: ...


class _Fallback(Exception):
    """This task cannot run remotely now; ``episode`` names the cause for one warning."""

    def __init__(self, message: str, *, episode: str) -> None:
        super().__init__(message)
        self.message = message
        self.episode = episode


class _Lost(Exception):
    """The execution was lost (service unreachable, stream gone, worker gave up)."""

    def __init__(self, message: str, *, episode: str) -> None:
        super().__init__(message)
        self.message = message
        self.episode = episode


_GLOB_CHARS = frozenset("*?[{")


def existing_output_parents(workspace_root: Path, patterns: Sequence[str]) -> tuple[str, ...]:
    """RX-008: the parents of the output patterns' literal prefixes (``/a/b/c.py`` → ``/a/b``,
    ``/a/b/dist/**`` → ``/a/b``) that are directories in the workspace now: a task run
    locally finds them, so the worker creates them too; the others the task makes itself."""
    found: dict[str, None] = {}
    for pattern in patterns:
        literal: list[str] = []
        for segment in pattern.strip("/").split("/"):
            if _GLOB_CHARS & set(segment):
                break
            literal.append(segment)
        parent = "/".join(literal[:-1])
        if parent and parent not in found and (workspace_root / parent).is_dir():
            found[parent] = None
    return tuple("/" + parent for parent in sorted(found))


def build_action(
    request: ActionRequest, *, namespace: str, platform: Platform, priority_ms: int = 0
) -> RemoteAction | str:
    """RX-002: the remote action of ``request``, or why it cannot run remotely.

    Input modes are read from the workspace now (the key holds only the executable bit);
    a predecessor without recorded outputs (``cache: false``) cannot be made present.
    """
    components = request.components
    inputs: list[ActionInput] = []
    for f in components.inputs:
        try:
            mode = stat.S_IMODE(os.stat(request.workspace_root / f.path[1:]).st_mode)
        except OSError as error:
            return f"input {f.path} unreadable: {error.strerror}"
        if bool(mode & 0o111) != f.executable:  # changed since hashed: the key says
            mode = (mode | 0o111) if f.executable else (mode & ~0o111)
        inputs.append(ActionInput(path=f.path, digest=f.digest, size=f.size, mode=mode & 0o777))
    by_task = dict(request.predecessor_outputs)
    predecessors: list[PredecessorOutputs] = []
    for p in components.predecessors:
        outputs = by_task.get(p.task)
        if outputs is None:
            return f"the outputs of {p.task} are not recorded (not cached)"
        files = tuple(
            sorted(
                (
                    ActionInput(path=o.path, digest=o.hash, size=o.size, mode=o.mode)
                    for o in outputs
                    if o.symlink is None
                ),
                key=lambda i: i.path,
            )
        )
        predecessors.append(PredecessorOutputs(task=str(p.task), files=files))
    recorded = RecordedKeyComponents.from_components(components).to_json()
    document = json.dumps(recorded, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    cwd = request.cwd.relative_to(request.workspace_root).as_posix()
    return RemoteAction(
        task=str(request.task),
        namespace=namespace,
        hash_name=request.hash_name,
        key=request.key,
        key_components_json=document.encode("utf-8"),
        command=components.action,
        env=tuple(sorted(request.env.items())),
        cwd="" if cwd == "." else cwd,
        inputs=tuple(sorted(inputs, key=lambda i: i.path)),
        predecessor_outputs=tuple(predecessors),
        output_patterns=tuple(sorted(components.outputs)),
        directories=existing_output_parents(request.workspace_root, components.outputs),
        platform=platform,
        timeout_ms=0 if request.timeout_s is None else int(request.timeout_s * 1000),
        grace_period_ms=int(request.grace_period_s * 1000),
        priority_ms=priority_ms,
    )


def _blobs(action: RemoteAction, root: Path) -> list[StoredBlob]:
    """Every file the action needs, as it lies in the workspace (uncompressed)."""
    seen: dict[Digest, StoredBlob] = {}
    files = list(action.inputs)
    for p in action.predecessor_outputs:
        files.extend(p.files)
    for f in files:
        if f.digest not in seen:
            seen[f.digest] = StoredBlob(
                digest=f.digest, size=f.size, path=root / f.path[1:], compression=Compression.NONE
            )
    return list(seen.values())


class _Spool:
    """One attempt's stream: the spool file, the next expected offset, the callback."""

    def __init__(self, path: Path, emit: OutputCallback) -> None:
        self._path = path
        self._emit = emit
        self._file: BinaryIO = path.open("wb")
        self.size = 0

    def restart(self) -> None:
        self._file.seek(0)
        self._file.truncate()
        self.size = 0

    def add(self, chunk: LogChunk) -> None:
        """Append the part of ``chunk`` not seen yet (a re-attached stream may repeat)."""
        end = chunk.offset + len(chunk.data)
        if end <= self.size or chunk.offset > self.size:
            return  # already seen; or a gap (the service never sends one): dropped
        data = chunk.data[self.size - chunk.offset :]
        self._file.write(data)
        self.size += len(data)
        self._emit(data)

    def close(self) -> None:
        self._file.close()

    def digest(self, request: ActionRequest) -> Digest:
        hasher = new_hasher(request.hash_name)
        with self._path.open("rb") as f:
            while block := f.read(1 << 16):
                hasher.update(block)
        return Digest(hasher.digest())


class RemoteExecutor:
    """An :class:`Executor` running a request remotely when its policy says so (RX-001).

    Args:
        client: The execution service.
        uploader: Uploads missing input blobs (RX-002).
        local: Runs ``never`` requests and ``auto`` fallbacks.
        namespace: The cache namespace results are published in.
        platform_of: The platform properties a request needs (``remote.platform`` merged
            with the task's ``platform``).
        warn: Receives one warning per fallback episode.
        notice: Receives ``(task, "waiting for a worker, pool=…")`` for a queued ``always``
            request after ``wait_notice_s``.
        remote_jobs: Remote executions at a time (``--remote-jobs``); ``None``: unbounded.
        wait_notice_s: See ``notice``.
        clock: Measures durations.
    """

    def __init__(
        self,
        *,
        client: ExecutionClient,
        uploader: InputUploader,
        local: Executor,
        namespace: str,
        platform_of: Callable[[ActionRequest], Platform],
        warn: Callable[[str], None],
        notice: Callable[[str, str], None],
        remote_jobs: int | None = None,
        wait_notice_s: float = WAIT_NOTICE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._uploader = uploader
        self._local = local
        self._namespace = namespace
        self._platform_of = platform_of
        self._warn = warn
        self._notice = notice
        self._slots = asyncio.Semaphore(remote_jobs) if remote_jobs else None
        self._wait_notice_s = wait_notice_s
        self._clock = clock
        #: Fallback episodes already warned about (RC-003: one warning each).
        self._warned: set[str] = set()
        #: The service is unreachable: ``auto`` requests stop trying it for this run.
        self._down = False
        self.workers: dict[str, str] = {}  # task → worker id of its remote success

    async def run(
        self,
        request: ActionRequest,
        *,
        on_stdout: OutputCallback,
        on_stderr: OutputCallback,
        cancel: CancelSignal,
    ) -> ExecutionOutcome:
        policy = request.remote
        if policy is RemotePolicy.NEVER or (policy is RemotePolicy.AUTO and self._down):
            return await self._local.run(
                request, on_stdout=on_stdout, on_stderr=on_stderr, cancel=cancel
            )
        action = build_action(
            request, namespace=self._namespace, platform=self._platform_of(request)
        )
        try:
            if isinstance(action, str):
                raise _Fallback(f"{request.task}: cannot run remotely: {action}", episode=action)
            if self._slots is None:
                return await self._remote(request, action, on_stdout, on_stderr, cancel)
            async with self._slots:
                return await self._remote(request, action, on_stdout, on_stderr, cancel)
        except (_Fallback, _Lost) as why:
            if why.episode not in self._warned:
                self._warned.add(why.episode)
                self._warn(f"{why.message}; running locally")
            return await self._local.run(
                request, on_stdout=on_stdout, on_stderr=on_stderr, cancel=cancel
            )

    async def _upload(self, request: ActionRequest, action: RemoteAction) -> None:
        blobs = _blobs(action, request.workspace_root)
        missing = await self._uploader.find_missing({b.digest: b.size for b in blobs})
        if not isinstance(missing, set):
            self._down = self._down or missing.unhealthy
            raise _Lost(f"remote execution unavailable: {missing.message}", episode="down")
        if missing:
            error = await self._uploader.upload([b for b in blobs if b.digest in missing])
            if error is not None:
                self._down = self._down or error.unhealthy
                raise _Lost(
                    f"remote execution: input upload failed: {error.message}", episode="down"
                )

    async def _remote(
        self,
        request: ActionRequest,
        action: RemoteAction,
        on_stdout: OutputCallback,
        on_stderr: OutputCallback,
        cancel: CancelSignal,
    ) -> ExecutionOutcome:
        always = request.remote is RemotePolicy.ALWAYS
        tries = _ALWAYS_RETRIES + 1 if always else 1
        for attempt in range(tries):
            try:
                await self._upload(request, action)
                return await self._submit(request, action, on_stdout, on_stderr, cancel)
            except _Lost as lost:
                if attempt + 1 >= tries or cancel.requested.is_set():
                    if always:
                        return _failed(f"remote execution failed: {lost.message}")
                    raise
                self._warn_once(f"{request.task}: {lost.message}; retrying", lost.episode)
        raise AssertionError("unreachable")  # pragma: no cover

    def _warn_once(self, message: str, episode: str) -> None:
        if episode not in self._warned:
            self._warned.add(episode)
            self._warn(message)

    async def _submit(
        self,
        request: ActionRequest,
        action: RemoteAction,
        on_stdout: OutputCallback,
        on_stderr: OutputCallback,
        cancel: CancelSignal,
    ) -> ExecutionOutcome:
        always = request.remote is RemotePolicy.ALWAYS
        started = self._clock()
        out = _Spool(request.streams.stdout, on_stdout)
        err = _Spool(request.streams.stderr, on_stderr)
        state = _Follow()
        try:
            follow = asyncio.ensure_future(
                self._follow(request, action, always=always, out=out, err=err, state=state)
            )
            stop = asyncio.ensure_future(cancel.requested.wait())
            kill = asyncio.ensure_future(cancel.kill_now.wait())
            try:
                await asyncio.wait({follow, stop, kill}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stop.cancel()
                kill.cancel()
            if not follow.done():  # RX-007: the run is cancelled
                follow.cancel()
                await asyncio.gather(follow, return_exceptions=True)
                if state.execution_id is not None:
                    # unreachable: the lease expires on the service; nothing else to do here
                    with contextlib.suppress(ExecutionUnavailable):
                        await self._client.cancel(state.execution_id)
                return ExecutionOutcome(
                    process=ProcessOutcome(
                        cancelled=True,
                        duration_s=self._clock() - started,
                        stdout_size=out.size,
                        stderr_size=err.size,
                    ),
                    touched_workspace=False,
                )
            final = follow.result()
        finally:
            state.close_notice()
            out.close()
            err.close()
        duration = self._clock() - started
        if isinstance(final, Cancelled):
            process = ProcessOutcome(cancelled=True, duration_s=duration)
            return ExecutionOutcome(process=process, touched_workspace=False)
        if isinstance(final, Failed):
            if final.reason is FailureReason.NO_WORKER_FOR_PLATFORM:
                pool = str(action.platform) or "default"
                raise _Fallback(
                    f"{request.task}: no remote worker for platform {pool}", episode=f"pool={pool}"
                )
            if final.reason is FailureReason.REJECTED:
                message = f"remote execution refused the action: {final.message}"
                if always:
                    return _failed(message)
                raise _Fallback(f"{request.task}: {message}", episode="rejected")
            raise _Lost(f"remote execution lost: {final.message}", episode="lost")
        process = ProcessOutcome(
            exit_code=final.exit_code,
            timed_out=final.timed_out,
            duration_s=final.duration_ms / 1000,
            stdout_size=out.size,
            stderr_size=err.size,
            stdout_digest=out.digest(request),
            stderr_digest=err.digest(request),
        )
        if final.exit_code == 0 and not final.timed_out:
            if state.worker is not None:
                self.workers[str(request.task)] = state.worker
            return ExecutionOutcome(
                process=process,
                touched_workspace=False,
                manifest_document=final.manifest_json,
                worker=state.worker,
            )
        return ExecutionOutcome(process=process, touched_workspace=False, worker=state.worker)

    async def _follow(
        self,
        request: ActionRequest,
        action: RemoteAction,
        *,
        always: bool,
        out: _Spool,
        err: _Spool,
        state: _Follow,
    ) -> Completed | Failed | Cancelled:
        """Consume updates to the final one, re-attaching after a dropped stream."""
        reattached = 0
        while True:
            try:
                if state.execution_id is None:
                    updates = self._client.execute(action, wait_for_worker=always)
                else:
                    updates = self._client.wait(state.execution_id)
                async for update in updates:
                    if isinstance(update, Queued):
                        state.execution_id = update.execution_id
                        if always and state.notice is None:
                            pool = dict(action.platform.properties).get("pool", "default")
                            task, text = str(request.task), f"waiting for a worker, pool={pool}"
                            state.notice = asyncio.get_running_loop().call_later(
                                self._wait_notice_s, self._notice, task, text
                            )
                    elif isinstance(update, Leased):
                        state.close_notice()
                        state.worker = update.worker_id
                        if state.attempt is not None and update.attempt != state.attempt:
                            out.restart()  # RX-005: a new attempt's streams start at 0
                            err.restart()
                        state.attempt = update.attempt
                    elif isinstance(update, LogChunk):
                        (out if update.stream is LogStream.STDOUT else err).add(update)
                    else:
                        return update
                raise ExecutionUnavailable("the update stream ended before the execution")
            except ExecutionUnavailable as error:
                if state.execution_id is None:
                    self._down = True
                    raise _Lost(f"remote execution unavailable: {error}", episode="down") from None
                if reattached >= _REATTACH:
                    raise _Lost(f"remote execution lost: {error}", episode="lost") from None
                reattached += 1


class _Follow:
    """What the update stream told so far."""

    def __init__(self) -> None:
        self.execution_id: str | None = None
        self.worker: str | None = None
        self.attempt: int | None = None
        self.notice: asyncio.TimerHandle | None = None

    def close_notice(self) -> None:
        if self.notice is not None:
            self.notice.cancel()
            self.notice = None


def _failed(message: str) -> ExecutionOutcome:
    return ExecutionOutcome(process=ProcessOutcome(spawn_error=message), touched_workspace=False)
