"""The ``haz-worker`` agent: takes leases over its session, runs each in a sandbox, publishes.

One :class:`Agent` serves one worker id for the process's life. It talks to the service
through the :class:`~worker.session.Session` port (reconnecting with bounded, jittered
exponential backoff), fetches inputs through its :class:`~worker.input_cache.InputCache`,
runs actions in a :class:`~hazremote.execute.sandbox.Sandbox`, and stores results through
two small ports (:class:`BlobStore`, :class:`ManifestPublisher`) that ``BlobTransfer`` and
:class:`GrpcManifestPublisher` implement.

Spec coverage:
* RX-003 — hello with id, slots, platform and held leases; heartbeats of held leases at the
  welcome's interval; reconnecting resumes held leases (the service cancels stale ones).
* RX-004 — each lease: inputs ensured (held from eviction), run in a sandbox, outputs collected.
* RX-005 — stdout/stderr stream as log messages with per-stream offsets, before the result.
* RX-007 — a cancel stops the process (SIGTERM to its group, SIGKILL after the grace period),
  never publishes, and releases the lease as cancelled.
* RX-008 — on exit 0: blobs uploaded, then the manifest put under the action's key in its
  namespace (ALREADY_EXISTS counts as published); a non-zero exit publishes nothing.
* RX-009 — inputs come from the bounded input cache, fetched once per missing blob.
* CACHE-011 — the manifest: outputs from the sandbox's records, stream digests, key components
  from the action; the producer is the worker's (the service records its own).
* EXEC-009 — timeouts are the sandbox's; a timed-out run is a failure (``timed_out``).
Out of scope: the command line (:mod:`worker.__main__`), the wire edge (:mod:`worker.wire`,
:mod:`worker.session`), scheduling (the service's).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import shutil
import tempfile
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import grpc
import grpc.aio

from hazremote.cache.codec import BlobCodec, FetchedBlob
from hazremote.cache.collect import StoredBlob
from hazremote.cache.manifest import (
    Manifest,
    ManifestError,
    StreamRecord,
    parse_key_components,
)
from hazremote.domain.digest import Digest
from hazremote.domain.model import DEFAULT_GRACE_PERIOD_S, CommandAction, HashName
from hazremote.execute.observers import StreamFiles
from hazremote.execute.sandbox import (
    SandboxAction,
    SandboxInput,
    SandboxRefused,
    SandboxResult,
)
from hazremote.execute.spawn import CancelSignal, OutputCallback
from hazremote.keys.framing import CHAPTER_REVISION
from hazremote.remote.action import Platform, RemoteAction
from hazremote.remote.transfer import TransferError
from hazremote.wire.haz.remote.v1 import cache_pb2, cache_pb2_grpc, digest_pb2, execution_pb2
from worker.input_cache import InputCache
from worker.session import Session, SessionFactory, SessionLost
from worker.wire import Lease, LeaseMalformed, lease_from_wire

__all__ = [
    "Agent",
    "AgentConfig",
    "BlobStore",
    "GrpcManifestPublisher",
    "ManifestPublisher",
    "SandboxRunner",
    "backoff_delay",
    "sandbox_action",
]

_log = logging.getLogger("haz.worker")

WorkerMessage = execution_pb2.WorkerMessage
_STDOUT = execution_pb2.LOG_STREAM_STDOUT
_STDERR = execution_pb2.LOG_STREAM_STDERR
_HASH_FUNCTIONS = {
    HashName.BLAKE3: digest_pb2.HASH_FUNCTION_BLAKE3,
    HashName.SHA256: digest_pb2.HASH_FUNCTION_SHA256,
}


# -- ports ------------------------------------------------------------------------------------


class BlobStore(Protocol):
    """Port: the content store, as ``BlobTransfer`` offers it."""

    async def download(
        self, blobs: Mapping[Digest, int], dest: Path
    ) -> Mapping[Digest, FetchedBlob] | TransferError: ...

    async def upload(self, blobs: Sequence[StoredBlob]) -> TransferError | None: ...


class ManifestPublisher(Protocol):
    """Port: puts a manifest under a key (immutably, SEC-004)."""

    async def put_manifest(
        self, *, namespace: str, hash_name: HashName, key: Digest, manifest_json: bytes
    ) -> str | None:
        """None when the store has a manifest for the key now (stored, or ALREADY_EXISTS);
        else why not."""
        ...


class SandboxRunner(Protocol):
    """Port: :meth:`hazremote.execute.sandbox.Sandbox.run`."""

    async def run(
        self,
        action: SandboxAction,
        *,
        streams: StreamFiles,
        blobs_dir: Path,
        on_stdout: OutputCallback,
        on_stderr: OutputCallback,
        cancel: CancelSignal,
    ) -> SandboxResult: ...


class GrpcManifestPublisher:
    """:class:`ManifestPublisher` over the cache API's ``ManifestStore.PutManifest``."""

    def __init__(
        self,
        channel: Callable[[], grpc.aio.Channel],
        *,
        metadata: Sequence[tuple[str, str]],
        timeout_s: float,
    ) -> None:
        self._channel = channel
        self._metadata = tuple(metadata)
        self._timeout_s = timeout_s

    async def put_manifest(
        self, *, namespace: str, hash_name: HashName, key: Digest, manifest_json: bytes
    ) -> str | None:
        stub = cache_pb2_grpc.ManifestStoreStub(self._channel())
        try:
            await stub.PutManifest(
                cache_pb2.PutManifestRequest(
                    namespace=namespace,
                    hash_function=_HASH_FUNCTIONS[hash_name],
                    key=key.raw,
                    manifest_json=manifest_json,
                ),
                timeout=self._timeout_s,
                metadata=self._metadata,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() is grpc.StatusCode.ALREADY_EXISTS:
                return None  # RC-002: another run stored first
            return f"{error.code().name}: {error.details() or ''}".rstrip(": ")
        return None


# -- configuration ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentConfig:
    """What the agent is.

    Attributes:
        worker_id: Its stable id (a reconnect with the same id resumes its leases).
        slots: Leases it runs at once.
        platform: Its platform properties (RX-003).
        work_dir: Where lease directories (spools, output blobs, sandboxes) are made.
        idle_exit_s: Exit after this long without a lease; None: never.
        backoff_initial_s: The first reconnect delay (doubled per failure, jittered).
        backoff_max_s: The bound of the reconnect delay.
    """

    worker_id: str
    slots: int
    platform: Platform
    work_dir: Path
    idle_exit_s: float | None = None
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0

    @property
    def producer(self) -> str:
        return f"haz-worker:{self.worker_id}"


def backoff_delay(
    failures: int, *, initial_s: float, max_s: float, jitter: Callable[[], float]
) -> float:
    """The delay before reconnect number ``failures`` (0-based): ``initial · 2^n`` bounded by
    ``max_s``, scaled by ``jitter()`` in [0.5, 1) so restarted workers do not reconnect in step."""
    base: float = min(max_s, initial_s * 2.0 ** min(failures, 32))
    return base * (0.5 + 0.5 * jitter())


def _relative(path: str, what: str) -> str:
    if not path.startswith("/"):
        raise SandboxRefused(f"{what} {path!r} is not workspace-absolute")
    return path[1:]


def sandbox_action(action: RemoteAction) -> SandboxAction:
    """The RX-002 action as the sandbox runs it: workspace-relative paths, the task's inputs
    and its predecessors' outputs as one file set, seconds for times.

    Raises:
        SandboxRefused: a path is not workspace-absolute.
    """
    command = action.command
    argv = (
        command.argv
        if isinstance(command, CommandAction)
        else (command.shell, "-c", command.script)
    )
    files = list(action.inputs)
    for predecessor in action.predecessor_outputs:
        files.extend(predecessor.files)
    return SandboxAction(
        argv=argv,
        env=dict(action.env),
        cwd=action.cwd or ".",
        inputs=tuple(
            SandboxInput(
                path=_relative(f.path, "input path"), digest=f.digest, size=f.size, mode=f.mode
            )
            for f in files
        ),
        outputs=tuple(_relative(p, "output pattern") for p in action.output_patterns),
        directories=tuple(_relative(d, "directory") for d in action.directories),
        timeout_s=action.timeout_ms / 1000 if action.timeout_ms > 0 else None,
        grace_period_s=(
            action.grace_period_ms / 1000 if action.grace_period_ms > 0 else DEFAULT_GRACE_PERIOD_S
        ),
    )


# -- the agent --------------------------------------------------------------------------------


class _Cancel:
    """A lease's :class:`CancelSignal`."""

    def __init__(self) -> None:
        self._requested = asyncio.Event()
        self._kill_now = asyncio.Event()

    @property
    def requested(self) -> asyncio.Event:
        return self._requested

    @property
    def kill_now(self) -> asyncio.Event:
        return self._kill_now


@dataclass(slots=True, eq=False)
class _Held:
    """A lease this worker holds until its result or release has been sent."""

    lease_id: str
    cancel: _Cancel = field(default_factory=_Cancel)
    cancelled: bool = False  # the service said stop: never publish
    drain_release: bool = False  # a second SIGTERM: give it back
    finished: bool = False
    task: asyncio.Task[None] | None = None


@dataclass(frozen=True, slots=True)
class _Out:
    message: WorkerMessage
    #: The lease whose last message this is (it stops being held once sent).
    final_for: str | None = None
    #: Lost with a broken session (logs, heartbeats); the rest waits for the next one.
    droppable: bool = False


class Agent:
    """RX-003: one worker's agent. Run with :meth:`run`; :meth:`drain` on SIGTERM.

    Args:
        config: Id, slots, platform, directories, idle exit, backoff.
        sessions: Opens sessions to the service.
        sandbox: Runs actions (a :class:`~hazremote.execute.sandbox.Sandbox` over ``cache``).
        cache: The input cache (its fetch hook downloads through ``blobs``).
        blobs: Uploads output and stream blobs.
        manifests: Puts manifests.
        codec: Encodes the stream spools as blobs (the sandbox's codec).
        clock: Wall time for ``created_at_unix``.
        jitter: Uniform in [0, 1) for the backoff.
    """

    def __init__(
        self,
        *,
        config: AgentConfig,
        sessions: SessionFactory,
        sandbox: SandboxRunner,
        cache: InputCache,
        blobs: BlobStore,
        manifests: ManifestPublisher,
        codec: BlobCodec,
        clock: Callable[[], float] = time.time,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._config = config
        self._sessions = sessions
        self._sandbox = sandbox
        self._cache = cache
        self._blobs = blobs
        self._manifests = manifests
        self._codec = codec
        self._clock = clock
        self._jitter = jitter
        self._held: dict[str, _Held] = {}
        self._outbox: deque[_Out] = deque()
        self._outbox_ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._draining = 0
        self._idle_timer: asyncio.TimerHandle | None = None
        self._reason = ""

    @property
    def stop_reason(self) -> str:
        """Why :meth:`run` returned ("drained", "idle"), once it has."""
        return self._reason

    # -- life ----------------------------------------------------------------------------------

    async def run(self) -> int:
        """Serve until drained or idle for ``idle_exit_s``; reconnects in between. Returns 0."""
        self._config.work_dir.mkdir(parents=True, exist_ok=True)
        self._update_idle()
        failures = 0
        while not self._stop.is_set():
            welcomed = False
            try:
                session = await self._sessions()
            except SessionLost as error:
                _log.warning("haz-worker: cannot connect: %s", error)
            else:
                welcomed = await self._serve(session)
            if self._stop.is_set():
                break
            failures = 0 if welcomed else failures + 1
            delay = backoff_delay(
                failures,
                initial_s=self._config.backoff_initial_s,
                max_s=self._config.backoff_max_s,
                jitter=self._jitter,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
        for held in list(self._held.values()):
            if held.task is not None:
                held.task.cancel()
        return 0

    def drain(self) -> None:
        """SIGTERM: take no new leases and exit once the held ones are done; a second call
        also stops the running ones and releases them as draining."""
        self._draining += 1
        if self._draining > 1:
            for held in self._held.values():
                if not held.finished:
                    held.drain_release = True
                    held.cancel.requested.set()
        self._check_drained()

    def _check_drained(self) -> None:
        if self._draining and not self._held:
            self._reason = self._reason or "drained"
            self._stop.set()

    def _update_idle(self) -> None:
        if self._config.idle_exit_s is None:
            return
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if not self._held:
            self._idle_timer = asyncio.get_running_loop().call_later(
                self._config.idle_exit_s, self._idle
            )

    def _idle(self) -> None:
        if not self._held:
            self._reason = self._reason or "idle"
            self._stop.set()

    # -- one session ---------------------------------------------------------------------------

    async def _serve(self, session: Session) -> bool:
        """Hello, welcome, then leases and cancels until the stream ends or the agent stops.
        True when the service welcomed this session."""
        tasks: list[asyncio.Task[None]] = []
        try:
            hello = WorkerMessage(
                hello=WorkerMessage.Hello(
                    worker_id=self._config.worker_id,
                    slots=self._config.slots,
                    platform=[
                        digest_pb2.Property(name=n, value=v)
                        for n, v in self._config.platform.properties
                    ],
                    held_lease_ids=sorted(self._held),
                )
            )
            await session.send(hello)
            first = await self._receive(session)
            if first is None or first.WhichOneof("message") != "welcome":
                _log.warning("haz-worker: the service did not welcome this worker")
                return False
            interval_s = max(first.welcome.heartbeat_interval_ms, 1) / 1000
            tasks.append(asyncio.create_task(self._write(session)))
            tasks.append(asyncio.create_task(self._heartbeat(interval_s)))
            while True:
                message = await self._receive(session)
                if message is None:
                    return True
                self._handle(message)
        except SessionLost as error:
            _log.warning("haz-worker: session lost: %s", error)
            return bool(tasks)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, SessionLost):
                    await task
            await session.close()

    async def _receive(self, session: Session) -> execution_pb2.ServerMessage | None:
        """The next message, or None when the stream ended or the agent stops."""
        receive = asyncio.ensure_future(session.receive())
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait((receive, stop), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if not receive.done():
            receive.cancel()
            with contextlib.suppress(asyncio.CancelledError, SessionLost):
                await receive
            return None
        return receive.result()

    async def _write(self, session: Session) -> None:
        while True:
            while self._outbox:
                out = self._outbox[0]
                try:
                    await session.send(out.message)
                except SessionLost:
                    if out.droppable:
                        self._outbox.popleft()
                    raise
                self._outbox.popleft()
                if out.final_for is not None:
                    self._held.pop(out.final_for, None)
                    self._update_idle()
                    self._check_drained()
            self._outbox_ready.clear()
            await self._outbox_ready.wait()

    async def _heartbeat(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            self._post(
                WorkerMessage(heartbeat=WorkerMessage.Heartbeat(lease_ids=sorted(self._held))),
                droppable=True,
            )

    def _post(
        self, message: WorkerMessage, *, final_for: str | None = None, droppable: bool = False
    ) -> None:
        self._outbox.append(_Out(message, final_for, droppable))
        self._outbox_ready.set()

    def _handle(self, message: execution_pb2.ServerMessage) -> None:
        kind = message.WhichOneof("message")
        if kind == "lease":
            self._take(message.lease)
        elif kind == "cancel":
            held = self._held.get(message.cancel.lease_id)
            if held is not None and not held.finished:
                held.cancelled = True
                held.cancel.requested.set()
            elif held is None:
                # Not ours (any more): say so, so the service frees the slot.
                self._post(
                    _released(
                        message.cancel.lease_id,
                        execution_pb2.RELEASE_REASON_CANCELLED,
                        "not running",
                    )
                )

    def _take(self, wire: execution_pb2.ServerMessage.Lease) -> None:
        lease_id = wire.lease_id
        if lease_id in self._held:
            return  # a resumed lease already running here
        held = _Held(lease_id)
        self._held[lease_id] = held
        self._update_idle()
        if self._draining:
            self._finish(
                held,
                _released(lease_id, execution_pb2.RELEASE_REASON_DRAINING, "worker is draining"),
            )
            return
        try:
            lease = lease_from_wire(wire)
        except LeaseMalformed as error:
            self._finish(
                held, _released(lease_id, execution_pb2.RELEASE_REASON_REJECTED, str(error))
            )
            return
        held.task = asyncio.create_task(self._execute(held, lease))

    def _finish(self, held: _Held, message: WorkerMessage) -> None:
        held.finished = True
        self._post(message, final_for=held.lease_id)

    # -- one lease -----------------------------------------------------------------------------

    async def _execute(self, held: _Held, lease: Lease) -> None:
        try:
            message = await self._run_lease(held, lease)
        except Exception as error:  # the worker's own failure: the execution fails, not retried
            _log.exception("haz-worker: lease %s failed", lease.lease_id)
            message = _result(
                lease.lease_id, failure=f"worker error: {type(error).__name__}: {error}"
            )
        self._finish(held, message)

    def _stopped(self, held: _Held) -> WorkerMessage | None:
        if held.cancelled:
            return _released(held.lease_id, execution_pb2.RELEASE_REASON_CANCELLED, "cancelled")
        if held.drain_release:
            return _released(
                held.lease_id, execution_pb2.RELEASE_REASON_DRAINING, "worker is draining"
            )
        return None

    async def _run_lease(self, held: _Held, lease: Lease) -> WorkerMessage:
        action = lease.action
        try:
            runnable = sandbox_action(action)
        except SandboxRefused as error:
            return _released(lease.lease_id, execution_pb2.RELEASE_REASON_REJECTED, str(error))
        refs = {f.digest: f.size for f in runnable.inputs}
        lease_dir = Path(tempfile.mkdtemp(dir=self._config.work_dir, prefix="lease-"))
        try:
            with self._cache.hold(refs):
                missing = await self._cache.ensure(refs)
                if missing is not None:
                    return _result(lease.lease_id, failure=f"inputs unavailable: {missing.message}")
                stopped = self._stopped(held)
                if stopped is not None:
                    return stopped
                outcome = await self._run_sandbox(held, lease, runnable, lease_dir)
            if isinstance(outcome, WorkerMessage):
                return outcome
            return await self._publish(held, lease, outcome, lease_dir)
        finally:
            await asyncio.to_thread(shutil.rmtree, lease_dir, True)

    async def _run_sandbox(
        self, held: _Held, lease: Lease, runnable: SandboxAction, lease_dir: Path
    ) -> WorkerMessage | tuple[SandboxResult, StreamFiles]:
        streams = StreamFiles(stdout=lease_dir / "stdout", stderr=lease_dir / "stderr")
        blobs_dir = lease_dir / "blobs"
        blobs_dir.mkdir()
        try:
            result = await self._sandbox.run(
                runnable,
                streams=streams,
                blobs_dir=blobs_dir,
                on_stdout=self._logger(lease.lease_id, _STDOUT),
                on_stderr=self._logger(lease.lease_id, _STDERR),
                cancel=held.cancel,
            )
        except SandboxRefused as error:
            return _released(lease.lease_id, execution_pb2.RELEASE_REASON_REJECTED, str(error))
        stopped = self._stopped(held)
        if stopped is not None:
            return stopped
        process = result.process
        if process is None:
            return _result(lease.lease_id, failure=result.problem or "the action did not start")
        duration_ms = int(process.duration_s * 1000)
        if process.spawn_error is not None:
            return _result(lease.lease_id, failure=process.spawn_error, duration_ms=duration_ms)
        if not process.succeeded:
            code = process.exit_code
            if code is None:
                code = 128 + (process.signal or 0)
            return _result(
                lease.lease_id,
                exit_code=code or 1,
                timed_out=process.timed_out,
                duration_ms=duration_ms,
            )
        if result.problem is not None or result.collected is None:
            return _result(
                lease.lease_id,
                failure=result.problem or "outputs were not collected",
                duration_ms=duration_ms,
            )
        return result, streams

    def _logger(self, lease_id: str, stream: execution_pb2.LogStream) -> OutputCallback:
        offset = 0

        def on_output(data: bytes) -> None:
            nonlocal offset
            self._post(
                WorkerMessage(
                    log=WorkerMessage.LogChunk(
                        lease_id=lease_id,
                        stream=stream,
                        data=data,
                        offset=offset,
                    )
                ),
                droppable=True,
            )
            offset += len(data)

        return on_output

    async def _publish(
        self, held: _Held, lease: Lease, outcome: tuple[SandboxResult, StreamFiles], lease_dir: Path
    ) -> WorkerMessage:
        result, streams = outcome
        assert result.process is not None
        assert result.collected is not None
        action = lease.action
        duration_ms = int(result.process.duration_s * 1000)
        try:
            components = parse_key_components(
                action.key_components_json, chapter_revision=CHAPTER_REVISION
            )
        except ManifestError as error:
            return _released(
                lease.lease_id, execution_pb2.RELEASE_REASON_REJECTED, f"key components: {error}"
            )
        encoded_dir = lease_dir / "streams"
        encoded_dir.mkdir()
        stream_blobs: list[StoredBlob] = []
        records: list[StreamRecord] = []
        for spool in (streams.stdout, streams.stderr):
            dest = encoded_dir / spool.name
            blob = await asyncio.to_thread(self._codec.encode_file, spool, dest, fsync=False)
            records.append(
                StreamRecord(hash=blob.digest, size=blob.size, compression=blob.compression)
            )
            stream_blobs.append(
                StoredBlob(
                    digest=blob.digest, size=blob.size, path=dest, compression=blob.compression
                )
            )
        manifest = Manifest(
            chapter_revision=CHAPTER_REVISION,
            hash_function=action.hash_name,
            key=action.key,
            created_at_unix=int(self._clock()),
            exit_code=0,
            duration_ms=max(0, duration_ms),
            producer=self._config.producer,
            stdout=records[0],
            stderr=records[1],
            outputs=result.collected.outputs,
            key_components=components,
        )
        blobs: dict[Digest, StoredBlob] = {b.digest: b for b in stream_blobs}
        blobs.update(result.collected.blobs)
        uploaded = await self._blobs.upload(list(blobs.values()))
        if uploaded is not None:
            return _result(
                lease.lease_id,
                failure=f"upload failed: {uploaded.message}",
                duration_ms=duration_ms,
            )
        stopped = self._stopped(held)
        if stopped is not None:
            return stopped  # RX-007: a cancelled lease never publishes
        document = manifest.to_json()
        problem = await self._manifests.put_manifest(
            namespace=action.namespace,
            hash_name=action.hash_name,
            key=action.key,
            manifest_json=document,
        )
        if problem is not None:
            return _result(
                lease.lease_id,
                failure=f"publishing the manifest failed: {problem}",
                duration_ms=duration_ms,
            )
        return _result(lease.lease_id, exit_code=0, duration_ms=duration_ms, manifest_json=document)


def _released(lease_id: str, reason: execution_pb2.ReleaseReason, message: str) -> WorkerMessage:
    return WorkerMessage(
        released=WorkerMessage.LeaseReleased(
            lease_id=lease_id,
            reason=reason,
            message=message,
        )
    )


def _result(
    lease_id: str,
    *,
    exit_code: int = 0,
    failure: str = "",
    timed_out: bool = False,
    duration_ms: int = 0,
    manifest_json: bytes | None = None,
) -> WorkerMessage:
    return WorkerMessage(
        result=WorkerMessage.Result(
            lease_id=lease_id,
            exit_code=exit_code,
            manifest_published=manifest_json is not None,
            manifest_json=manifest_json or b"",
            duration_ms=duration_ms,
            timed_out=timed_out,
            failure_message=failure,
        )
    )
