"""RemoteExecutor against hand-written fakes of its own ports (ExecutionClient, InputUploader,
the local Executor): never a fake of gRPC.

Spec coverage: RX-001 (never local; auto falls back with one warning; always waits and
retries), RX-002 (find-missing upload, sorted inputs, recorded key components), RX-005 (live
chunks, a new attempt restarts the streams), RX-007 (cancel, re-attach), RX-008 (the
manifest document handed back; a nonzero exit hands back none).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hazremote.cache.collect import StoredBlob
from hazremote.cache.manifest import RecordedKeyComponents
from hazremote.domain.digest import Digest, digest_bytes
from hazremote.domain.model import CommandAction, HashName, RemotePolicy
from hazremote.domain.refs import TaskId
from hazremote.execute.executor import ActionRequest, ExecutionOutcome
from hazremote.execute.observers import StreamFiles
from hazremote.execute.scheduler import Cancellation
from hazremote.execute.spawn import CancelSignal, OutputCallback, ProcessOutcome
from hazremote.keys.components import InputFile, KeyComponents
from hazremote.remote.action import Platform, RemoteAction
from hazremote.remote.execution import (
    Cancelled,
    Completed,
    ExecutionUnavailable,
    ExecutionUpdate,
    Failed,
    FailureReason,
    Leased,
    LogChunk,
    LogStream,
    Queued,
    RemoteExecutor,
)
from hazremote.remote.transfer import TransferError

HASH = HashName.BLAKE3
DOC = b'{"manifest":"document"}\n'


@dataclass
class FakeClient:
    """Plays scripted update lists: one per ``execute`` call, then per ``wait`` call. An
    ``ExecutionUnavailable`` in a script is raised there; ``"block"`` waits forever."""

    scripts: list[list[object]] = field(default_factory=list)
    waits: list[list[object]] = field(default_factory=list)
    actions: list[RemoteAction] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    seen_before_end: list[bytes] = field(default_factory=list)
    sink: list[bytes] | None = None
    pause_after_queued: bool = False

    async def _play(self, script: list[object]) -> AsyncIterator[ExecutionUpdate]:
        for item in script:
            await asyncio.sleep(0)
            if isinstance(item, ExecutionUnavailable):
                raise item
            if item == "block":
                await asyncio.Event().wait()
            if isinstance(item, Completed) and self.sink is not None:
                self.seen_before_end.extend(self.sink)
            assert not isinstance(item, str | ExecutionUnavailable)
            yield item  # type: ignore[misc]
            if isinstance(item, Queued) and self.pause_after_queued:
                await asyncio.sleep(0.01)

    def execute(
        self, action: RemoteAction, *, wait_for_worker: bool
    ) -> AsyncIterator[ExecutionUpdate]:
        self.actions.append(action)
        if not self.scripts:
            raise ExecutionUnavailable("connection refused")
        return self._play(self.scripts.pop(0))

    def wait(self, execution_id: str) -> AsyncIterator[ExecutionUpdate]:
        return self._play(self.waits.pop(0))

    async def cancel(self, execution_id: str) -> bool:
        self.cancelled.append(execution_id)
        return True


@dataclass
class FakeUploader:
    present: set[Digest] = field(default_factory=set)
    uploaded: list[Digest] = field(default_factory=list)
    down: bool = False

    async def find_missing(self, blobs: Mapping[Digest, int]) -> set[Digest] | TransferError:
        if self.down:
            return TransferError(message="unreachable")
        return {d for d in blobs if d not in self.present}

    async def upload(self, blobs: Sequence[StoredBlob]) -> TransferError | None:
        self.uploaded.extend(b.digest for b in blobs)
        return None


@dataclass
class FakeLocal:
    runs: list[TaskId] = field(default_factory=list)

    async def run(
        self,
        request: ActionRequest,
        *,
        on_stdout: OutputCallback,
        on_stderr: OutputCallback,
        cancel: CancelSignal,
    ) -> ExecutionOutcome:
        self.runs.append(request.task)
        request.streams.stdout.write_bytes(b"local\n")
        request.streams.stderr.write_bytes(b"")
        on_stdout(b"local\n")
        return ExecutionOutcome(process=ProcessOutcome(exit_code=0, pid=1), touched_workspace=True)


def make_request(root: Path, policy: RemotePolicy, name: str = "build") -> ActionRequest:
    root.mkdir(exist_ok=True)
    for rel, data in (("b.txt", b"bee"), ("a.sh", b"echo")):
        (root / rel).write_bytes(data)
    (root / "a.sh").chmod(0o755)
    (root / "b.txt").chmod(0o644)
    inputs = tuple(
        InputFile(path=p, executable=x, digest=digest_bytes(HASH, d), size=len(d))
        for p, x, d in (("/a.sh", True, b"echo"), ("/b.txt", False, b"bee"))
    )
    components = KeyComponents(action=CommandAction(argv=("./a.sh",)), inputs=inputs)
    spool = root.parent / "spool"
    spool.mkdir(exist_ok=True)
    return ActionRequest(
        task=TaskId("app", name),
        key=digest_bytes(HASH, name.encode()),
        components=components,
        argv=("./a.sh",),
        env={"B": "2", "A": "1"},
        workspace_root=root,
        cwd=root,
        outputs=(),
        streams=StreamFiles(stdout=spool / f"{name}.out", stderr=spool / f"{name}.err"),
        timeout_s=None,
        grace_period_s=1.0,
        hash_name=HASH,
        remote=policy,
        platform={"pool": "large"},
    )


@dataclass
class Rig:
    client: FakeClient
    uploader: FakeUploader
    local: FakeLocal
    executor: RemoteExecutor
    warnings: list[str]
    notices: list[tuple[str, str]]
    stdout: list[bytes]
    stderr: list[bytes]

    def run(self, request: ActionRequest, cancel: Cancellation | None = None) -> ExecutionOutcome:
        return asyncio.run(self.arun(request, cancel or Cancellation()))

    async def arun(self, request: ActionRequest, cancel: Cancellation) -> ExecutionOutcome:
        return await self.executor.run(
            request, on_stdout=self.stdout.append, on_stderr=self.stderr.append, cancel=cancel
        )


def rig(*scripts: list[object], waits: Sequence[list[object]] = ()) -> Rig:
    client = FakeClient(scripts=list(scripts), waits=list(waits))
    uploader, local = FakeUploader(), FakeLocal()
    warnings: list[str] = []
    notices: list[tuple[str, str]] = []
    executor = RemoteExecutor(
        client=client,
        uploader=uploader,
        local=local,
        namespace="main",
        platform_of=lambda r: Platform.of(r.platform),
        warn=warnings.append,
        notice=lambda task, text: notices.append((task, text)),
        wait_notice_s=0.0,
    )
    stdout: list[bytes] = []
    client.sink = stdout
    return Rig(client, uploader, local, executor, warnings, notices, stdout, [])


def success(*chunks: LogChunk, attempt: int = 1) -> list[object]:
    return [
        Queued(execution_id="e1", position=0),
        Leased(worker_id="w1", attempt=attempt),
        *chunks,
        Completed(exit_code=0, manifest_json=DOC, duration_ms=5),
    ]


def out(data: bytes, offset: int) -> LogChunk:
    return LogChunk(stream=LogStream.STDOUT, data=data, offset=offset)


def test_success_uploads_what_is_missing_streams_live_and_hands_back_the_manifest(
    tmp_path: Path,
) -> None:
    """RX-002/005/008: missing inputs only are uploaded; the action carries sorted inputs
    with their modes and the recorded key components; chunks reach the observer before
    the completion; the manifest document comes back with the worker."""
    r = rig(success(out(b"hel", 0), out(b"lo\n", 3)))
    request = make_request(tmp_path / "ws", RemotePolicy.AUTO)
    r.uploader.present = {digest_bytes(HASH, b"bee")}
    outcome = r.run(request)
    assert outcome.manifest_document == DOC
    assert outcome.worker == "w1"
    assert r.executor.workers == {"app:build": "w1"}
    assert outcome.process.exit_code == 0
    assert outcome.process.stdout_digest == digest_bytes(HASH, b"hello\n")
    assert r.uploader.uploaded == [digest_bytes(HASH, b"echo")]
    assert r.client.seen_before_end == [b"hel", b"lo\n"]
    assert request.streams.stdout.read_bytes() == b"hello\n"
    (action,) = r.client.actions
    assert [(i.path, i.mode, i.size) for i in action.inputs] == [
        ("/a.sh", 0o755, 4),
        ("/b.txt", 0o644, 3),
    ]
    assert json.loads(action.key_components_json) == (
        RecordedKeyComponents.from_components(request.components).to_json()
    )
    assert action.env == (("A", "1"), ("B", "2"))
    assert str(action.platform) == "pool=large"
    assert (action.key, action.namespace, action.cwd) == (request.key, "main", "")
    assert r.local.runs == []
    assert r.warnings == []


def test_a_new_attempt_restarts_the_spooled_streams(tmp_path: Path) -> None:
    """RX-005: a second lease's offsets restart at 0; only its bytes are spooled."""
    script = [
        Queued(execution_id="e1", position=0),
        Leased(worker_id="w1", attempt=1),
        out(b"first try\n", 0),
        Leased(worker_id="w2", attempt=2),
        out(b"second\n", 0),
        Completed(exit_code=0, manifest_json=DOC, duration_ms=5),
    ]
    r = rig(script)
    request = make_request(tmp_path / "ws", RemotePolicy.AUTO)
    outcome = r.run(request)
    assert request.streams.stdout.read_bytes() == b"second\n"
    assert outcome.process.stdout_digest == digest_bytes(HASH, b"second\n")
    assert outcome.worker == "w2"


def test_a_dropped_stream_reattaches_and_skips_repeated_bytes(tmp_path: Path) -> None:
    """RX-007: after the stream breaks, WaitExecution resumes; repeated bytes are dropped."""
    first = [
        Queued(execution_id="e9", position=0),
        Leased(worker_id="w1", attempt=1),
        out(b"abc", 0),
        ExecutionUnavailable("stream reset"),
    ]
    again = [Leased(worker_id="w1", attempt=1), out(b"abcdef", 0), success()[-1]]
    r = rig(first, waits=[again])
    request = make_request(tmp_path / "ws", RemotePolicy.AUTO)
    outcome = r.run(request)
    assert outcome.manifest_document == DOC
    assert r.stdout == [b"abc", b"def"]
    assert request.streams.stdout.read_bytes() == b"abcdef"


def test_auto_without_a_worker_runs_locally_with_one_warning(tmp_path: Path) -> None:
    """RX-001: no worker for the platform → local run; two tasks, one warning."""
    failed = Failed(reason=FailureReason.NO_WORKER_FOR_PLATFORM, message="no worker")
    r = rig([Queued(execution_id="e1", position=0), failed], [failed])
    for name in ("one", "two"):
        outcome = r.run(make_request(tmp_path / "ws", RemotePolicy.AUTO, name))
        assert outcome.process.exit_code == 0
        assert outcome.manifest_document is None
    assert r.local.runs == [TaskId("app", "one"), TaskId("app", "two")]
    assert r.warnings == ["app:one: no remote worker for platform pool=large; running locally"]


def test_auto_with_the_service_down_runs_locally_with_one_warning(tmp_path: Path) -> None:
    """RX-001/RC-003: unreachable service → local; later tasks do not try it again."""
    r = rig()  # no scripts: every execute raises ExecutionUnavailable
    for name in ("one", "two"):
        r.run(make_request(tmp_path / "ws", RemotePolicy.AUTO, name))
    assert r.local.runs == [TaskId("app", "one"), TaskId("app", "two")]
    assert len(r.client.actions) == 1
    assert len(r.warnings) == 1
    assert "unavailable" in r.warnings[0]


def test_auto_with_uploads_failing_runs_locally(tmp_path: Path) -> None:
    r = rig(success())
    r.uploader.down = True
    r.run(make_request(tmp_path / "ws", RemotePolicy.AUTO))
    assert r.local.runs == [TaskId("app", "build")]
    assert r.client.actions == []
    assert r.warnings == ["remote execution unavailable: unreachable; running locally"]


def test_always_waits_visibly_then_succeeds(tmp_path: Path) -> None:
    """RX-001: ``always`` shows "waiting for a worker, pool=large" while queued."""

    async def scenario(r: Rig) -> ExecutionOutcome:
        return await r.arun(make_request(tmp_path / "ws", RemotePolicy.ALWAYS), Cancellation())

    script: list[object] = [Queued(execution_id="e1", position=3)]
    r = rig(script + success()[1:])
    r.client.pause_after_queued = True  # the notice timer (0 s) fires meanwhile
    outcome = asyncio.run(scenario(r))
    assert outcome.manifest_document == DOC
    assert r.notices == [("app:build", "waiting for a worker, pool=large")]
    assert r.local.runs == []


def test_always_resubmits_a_lost_execution(tmp_path: Path) -> None:
    lost = Failed(reason=FailureReason.RETRIES_EXHAUSTED, message="lease expired 3 times")
    r = rig([Queued(execution_id="e1", position=0), lost], success())
    outcome = r.run(make_request(tmp_path / "ws", RemotePolicy.ALWAYS))
    assert outcome.manifest_document == DOC
    assert len(r.client.actions) == 2
    assert r.local.runs == []


def test_cancellation_sends_cancel_execution(tmp_path: Path) -> None:
    """RX-007: the cancel token reaches the service; the outcome is cancelled."""
    r = rig([Queued(execution_id="e7", position=0), Leased(worker_id="w", attempt=1), "block"])

    async def scenario() -> ExecutionOutcome:
        cancel = Cancellation()
        running = asyncio.ensure_future(
            r.arun(make_request(tmp_path / "ws", RemotePolicy.ALWAYS), cancel)
        )
        for _ in range(20):
            await asyncio.sleep(0)
        cancel.requested.set()
        return await running

    outcome = asyncio.run(scenario())
    assert outcome.process.cancelled
    assert r.client.cancelled == ["e7"]


def test_a_nonzero_exit_reports_code_and_streams_and_hands_back_no_manifest(
    tmp_path: Path,
) -> None:
    """RX-008: a failure is reported with its streams; no document, so nothing is stored."""
    script = [
        Queued(execution_id="e1", position=0),
        Leased(worker_id="w1", attempt=1),
        LogChunk(stream=LogStream.STDERR, data=b"boom\n", offset=0),
        Completed(exit_code=3, manifest_json=b"", duration_ms=5),
    ]
    r = rig(script)
    request = make_request(tmp_path / "ws", RemotePolicy.AUTO)
    outcome = r.run(request)
    assert outcome.manifest_document is None
    assert outcome.process.exit_code == 3
    assert r.stderr == [b"boom\n"]
    assert request.streams.stderr.read_bytes() == b"boom\n"


def test_a_cancelled_update_is_a_cancelled_outcome(tmp_path: Path) -> None:
    r = rig([Queued(execution_id="e1", position=0), Cancelled()])
    assert r.run(make_request(tmp_path / "ws", RemotePolicy.AUTO)).process.cancelled


def test_never_runs_locally_without_asking_the_service(tmp_path: Path) -> None:
    """RX-001: a ``never`` request is the local executor's alone."""
    r = rig(success())
    r.run(make_request(tmp_path / "ws", RemotePolicy.NEVER))
    assert r.local.runs == [TaskId("app", "build")]
    assert r.client.actions == []
