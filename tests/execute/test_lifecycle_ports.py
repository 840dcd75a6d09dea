"""The lifecycle in-process, with hand-written fakes of its ports (CacheTiers, Executor).

Spec coverage: EXEC-007 (probe then execute), EXEC-009 (classification), EXEC-012..015
(cancellation), EXEC-017/CACHE-023 (a hit replays its streams), CACHE-017/018 (a failed store
is a warning, the task still succeeds), RC-001 (remote hit, settled for the backfill), RC-003
(remote trouble is a miss: the task runs). The end-to-end behaviour is tested through ``haz``
in ``tests/run`` and ``tests/remote``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from hazremote.cache.manifest import (
    Compression,
    Manifest,
    RecordedKeyComponents,
    StreamRecord,
)
from hazremote.cache.tier import (
    ByteSink,
    KnownDigests,
    OutputFile,
    RestoreResult,
    RestoreStatus,
)
from hazremote.cache.tiers import Entry, Stored, Tier
from hazremote.domain.digest import Digest, digest_bytes
from hazremote.domain.model import (
    CommandAction,
    HashName,
    Origin,
    Project,
    Task,
    TaskSpec,
    Workspace,
    WorkspaceSettings,
)
from hazremote.domain.patterns import PathPattern
from hazremote.domain.refs import TaskId
from hazremote.execute.executor import ActionRequest, ExecutionOutcome
from hazremote.execute.lifecycle import CachePolicy, LifecycleSettings, LocalLifecycle
from hazremote.execute.observers import NullObserver
from hazremote.execute.records import CancelledRecord, CompletedRecord, RunSource, RunState
from hazremote.execute.scheduler import Cancellation, Executed, Miss
from hazremote.execute.spawn import CancelSignal, OutputCallback, ProcessOutcome
from hazremote.graph import build_graph
from hazremote.keys.components import KeyComponents
from hazremote.keys.deriver import KeyDeriver

HASH = HashName.BLAKE3


def manifest_for(key: Digest, *, stdout: bytes = b"recorded\n") -> Manifest:
    def record(data: bytes) -> StreamRecord:
        return StreamRecord(
            hash=digest_bytes(HASH, data), size=len(data), compression=Compression.NONE
        )

    return Manifest(
        chapter_revision=1,
        hash_function=HASH,
        key=key,
        created_at_unix=0,
        duration_ms=1,
        producer="test",
        stdout=record(stdout),
        stderr=record(b""),
        outputs=(),
        key_components=RecordedKeyComponents.from_components(
            KeyComponents(action=CommandAction(argv=("true",)))
        ),
    )


@dataclass
class FakeTiers:
    """A CacheTiers holding manifests in dicts; it restores by replaying ``b"recorded\\n"``."""

    local: dict[Digest, Manifest] = field(default_factory=dict)
    remote: dict[Digest, Manifest] = field(default_factory=dict)
    remote_broken: bool = False
    store_fails: bool = False
    stored: list[Digest] = field(default_factory=list)
    settled: list[tuple[Tier, bool]] = field(default_factory=list)
    fetches: int = 0
    executed_documents: list[bytes] = field(default_factory=list)

    @property
    def has_remote(self) -> bool:
        return True

    def lookup_local(self, key: Digest, *, again: bool = False) -> Manifest | None:
        return self.local.get(key)

    def lookup_ahead(self, key: Digest) -> Manifest | None:
        return self.local.get(key)

    def restore(
        self,
        entry: Entry,
        *,
        workspace_root: Path,
        output_patterns: Sequence[PathPattern],
        stdout_sink: ByteSink,
        stderr_sink: ByteSink,
        known_digests: KnownDigests | None,
    ) -> RestoreResult:
        stdout_sink(b"recorded\n")
        return RestoreResult(status=RestoreStatus.RESTORED)

    async def fetch_remote(self, key: Digest) -> Entry | None:
        self.fetches += 1
        await asyncio.sleep(0)
        manifest = None if self.remote_broken else self.remote.get(key)
        return None if manifest is None else Entry(manifest=manifest, tier=Tier.REMOTE)

    async def fetch_executed(self, key: Digest, document: bytes) -> Entry | None:
        self.executed_documents.append(document)
        manifest = None if self.remote_broken else manifest_for(key)
        return None if manifest is None else Entry(manifest=manifest, tier=Tier.REMOTE)

    async def settle(self, entry: Entry, *, restored: bool, label: str) -> None:
        self.settled.append((entry.tier, restored))

    async def look_ahead(
        self, keys: Sequence[Digest], *, local_hits: Sequence[Manifest]
    ) -> Mapping[Digest, Manifest]:
        return {k: self.remote[k] for k in keys if k in self.remote}

    async def store(
        self,
        *,
        task: TaskId,
        key: Digest,
        components: KeyComponents,
        stdout: Path,
        stderr: Path,
        outputs: Sequence[OutputFile],
        duration_ms: int,
    ) -> Stored:
        if self.store_fails:
            return Stored(manifest=None, warnings=(f"{task}: result not cached: disk full",))
        self.stored.append(key)
        return Stored(manifest=manifest_for(key, stdout=stdout.read_bytes()))

    def close(self) -> list[str]:
        return []


@dataclass
class FakeExecutor:
    """An Executor that writes ``stdout`` to the spool and exits with ``exit_code``; with
    ``block`` it runs until cancelled."""

    exit_code: int = 0
    stdout: bytes = b"fresh\n"
    block: bool = False
    requests: list[ActionRequest] = field(default_factory=list)

    async def run(
        self,
        request: ActionRequest,
        *,
        on_stdout: OutputCallback,
        on_stderr: OutputCallback,
        cancel: CancelSignal,
    ) -> ExecutionOutcome:
        self.requests.append(request)
        request.streams.stdout.write_bytes(self.stdout)
        request.streams.stderr.write_bytes(b"")
        on_stdout(self.stdout)
        if self.block:
            await cancel.requested.wait()
            process = ProcessOutcome(signal=15, cancelled=True, pid=1)
        else:
            process = ProcessOutcome(
                exit_code=self.exit_code,
                pid=1,
                stdout_digest=digest_bytes(HASH, self.stdout),
                stderr_digest=digest_bytes(HASH, b""),
            )
        return ExecutionOutcome(process=process, touched_workspace=True)


class Recorder(NullObserver):
    def __init__(self) -> None:
        self.started: list[RunSource] = []
        self.stdout: list[bytes] = []

    def task_started(self, task: TaskId, *, source: RunSource) -> None:
        self.started.append(source)

    def task_stdout(self, task: TaskId, chunk: bytes) -> None:
        self.stdout.append(chunk)


def make_project() -> Project:
    origin = Origin(file="app/haz.yml", key_path="tasks.build", line=1)
    spec = TaskSpec(name="build", action=CommandAction(argv=("true",)), inputs=(), origin=origin)
    return Project(name="app", dir="app", tags=(), tasks={"build": spec}, file="app/haz.yml")


def make_task(root: Path) -> Task:
    workspace = Workspace(
        root=root, settings=WorkspaceSettings(), projects=(make_project(),), overlays=()
    )
    return build_graph(workspace).tasks[TaskId("app", "build")]


@dataclass
class Harness:
    lifecycle: LocalLifecycle
    tiers: FakeTiers
    executor: FakeExecutor | RemoteSuccessExecutor
    observer: Recorder
    task: Task
    deriver: KeyDeriver
    root: Path

    @property
    def key(self) -> Digest:
        return self.deriver.derive(self.task).key

    @property
    def lifecycle_root(self) -> Path:
        return self.root

    @property
    def task_project(self) -> Project:
        return make_project()

    async def run(self, cancel: Cancellation | None = None) -> tuple[Executed, bool]:
        """Probe, and execute a miss; the result and whether the probe missed."""
        cancel = cancel or Cancellation()
        probed = await self.lifecycle.probe(self.task, (), cancel)
        if isinstance(probed, Miss):
            executed = await self.lifecycle.execute(self.task, probed, cancel)
            self.lifecycle.release(executed)
            return executed, True
        self.lifecycle.release(probed)
        return probed, False


Make = Callable[..., Harness]


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Make]:
    made: list[Harness] = []

    def build(
        tiers: FakeTiers | None = None, executor: FakeExecutor | RemoteSuccessExecutor | None = None
    ) -> Harness:
        root = tmp_path / "ws"
        (root / "app").mkdir(parents=True)
        (tmp_path / "spool").mkdir()
        tiers = tiers or FakeTiers()
        executor = executor or FakeExecutor()
        observer = Recorder()
        deriver = KeyDeriver.open(workspace_root=root, hash_name=HASH, host_env={})
        lifecycle = LocalLifecycle(
            settings=LifecycleSettings(
                workspace_root=root,
                hash_name=HASH,
                spool_dir=tmp_path / "spool",
                policy=CachePolicy(),
                grace_period_s=0.1,
            ),
            deriver=deriver,
            tiers=tiers,
            executor=executor,
            observer=observer,
        )
        harness = Harness(lifecycle, tiers, executor, observer, make_task(root), deriver, root)
        made.append(harness)
        return harness

    yield build
    for harness in made:
        harness.lifecycle.close()
        harness.deriver.close()


def test_a_local_hit_restores_and_replays_without_executing(make: Make) -> None:
    """EXEC-007/017: a local hit is restored, its streams replayed, nothing runs; the probe
    settles it (RC-002: the tiers may share it with the remote)."""
    harness = make()
    harness.tiers.local[harness.key] = manifest_for(harness.key)
    executed, missed = asyncio.run(harness.run())
    record = executed.record
    assert not missed
    assert isinstance(record, CompletedRecord)
    assert (record.state, record.source) == (RunState.SUCCEEDED, RunSource.LOCAL_CACHE)
    assert record.stdout_digest == digest_bytes(HASH, b"recorded\n")
    assert harness.observer.started == [RunSource.LOCAL_CACHE]
    assert harness.observer.stdout == [b"recorded\n"]
    assert harness.executor.requests == []
    assert harness.tiers.settled == [(Tier.LOCAL, True)]


def test_a_miss_executes_through_the_executor_and_stores(make: Make) -> None:
    """EXEC-007/008, CACHE-017: a miss in every tier runs once with the task's action and
    is stored; the record carries the stored entry's digests; the spools are released."""
    harness = make()
    executed, missed = asyncio.run(harness.run())
    record = executed.record
    assert missed
    assert isinstance(record, CompletedRecord)
    assert (record.state, record.source, record.exit_code) == (
        RunState.SUCCEEDED,
        RunSource.FRESH,
        0,
    )
    (request,) = harness.executor.requests
    assert (request.argv, request.key, request.cwd) == (
        ("true",),
        harness.key,
        harness.lifecycle_root / "app",
    )
    assert harness.tiers.fetches == 1  # the remote was asked before running
    assert harness.tiers.stored == [harness.key]
    assert record.outputs_digest == manifest_for(harness.key).outputs_digest()
    assert executed.streams is not None
    assert not executed.streams.stdout.exists()  # released once reported
    assert harness.lifecycle.warnings == []


def test_a_failed_store_is_a_warning_and_the_task_still_succeeds(make: Make) -> None:
    """CACHE-017/018: the store's failure is a warning; the outputs digest comes from the
    workspace instead."""
    harness = make(tiers=FakeTiers(store_fails=True))
    executed, _ = asyncio.run(harness.run())
    record = executed.record
    assert isinstance(record, CompletedRecord)
    assert record.state is RunState.SUCCEEDED
    assert record.outputs_digest is not None
    assert harness.lifecycle.warnings == ["app:build: result not cached: disk full"]


def test_a_failing_process_is_not_stored(make: Make) -> None:
    """CACHE-018, EXEC-009: only exit 0 is stored."""
    harness = make(executor=FakeExecutor(exit_code=2))
    executed, _ = asyncio.run(harness.run())
    assert isinstance(executed.record, CompletedRecord)
    assert (executed.record.state, executed.record.exit_code) == (RunState.FAILED, 2)
    assert harness.tiers.stored == []


def test_a_remote_hit_is_restored_and_settled_for_the_backfill(make: Make) -> None:
    """RC-001/008: a local miss found remotely is restored, recorded ``remote-cache`` and
    settled as restored (the tiers hand it to the backfill); nothing runs."""
    harness = make()
    harness.tiers.remote[harness.key] = manifest_for(harness.key)
    executed, missed = asyncio.run(harness.run())
    assert not missed
    assert isinstance(executed.record, CompletedRecord)
    assert executed.record.source is RunSource.REMOTE_CACHE
    assert harness.observer.stdout == [b"recorded\n"]
    assert harness.executor.requests == []
    assert harness.tiers.settled == [(Tier.REMOTE, True)]


def test_remote_trouble_is_a_miss_and_the_task_runs(make: Make) -> None:
    """RC-003: a remote that fails answers nothing; the task runs and is stored locally."""
    harness = make(tiers=FakeTiers(remote_broken=True))
    harness.tiers.remote[harness.key] = manifest_for(harness.key)
    executed, missed = asyncio.run(harness.run())
    assert missed
    assert isinstance(executed.record, CompletedRecord)
    assert executed.record.source is RunSource.FRESH
    assert harness.observer.stdout == [b"fresh\n"]
    assert harness.tiers.stored == [harness.key]


def test_a_cancelled_execution_is_a_cancelled_record(make: Make) -> None:
    """EXEC-012..015: cancellation during the run ends in a cancelled record, not stored."""
    harness = make(executor=FakeExecutor(block=True))

    async def main() -> Executed:
        cancel = Cancellation()
        running = asyncio.ensure_future(harness.run(cancel))
        while not harness.executor.requests:
            await asyncio.sleep(0)
        cancel.request(2)
        executed, _ = await running
        return executed

    executed = asyncio.run(main())
    assert isinstance(executed.record, CancelledRecord)
    assert executed.record.key == harness.key
    assert harness.tiers.stored == []


def test_the_lookahead_asks_the_tiers_for_local_misses(make: Make) -> None:
    """RC-001: the remote lookahead derives the run's keys and asks the tiers for them."""
    harness = make()
    graph = build_graph(
        Workspace(
            root=harness.lifecycle_root,
            settings=WorkspaceSettings(),
            projects=(harness.task_project,),
            overlays=(),
        )
    )
    asked = asyncio.run(harness.lifecycle.prefetch_remote(graph, (harness.task.id,)))
    assert asked == 1


@dataclass
class RemoteSuccessExecutor:
    """An Executor that ran the action remotely: live chunks, then the manifest document."""

    document: bytes = b'{"published":true}\n'
    requests: list[ActionRequest] = field(default_factory=list)

    async def run(
        self,
        request: ActionRequest,
        *,
        on_stdout: OutputCallback,
        on_stderr: OutputCallback,
        cancel: CancelSignal,
    ) -> ExecutionOutcome:
        self.requests.append(request)
        request.streams.stdout.write_bytes(b"live\n")
        request.streams.stderr.write_bytes(b"")
        on_stdout(b"live\n")
        return ExecutionOutcome(
            process=ProcessOutcome(exit_code=0),
            touched_workspace=False,
            manifest_document=self.document,
            worker="w1",
        )


def test_a_remote_success_is_restored_like_a_remote_hit_and_not_stored(make: Make) -> None:
    """RX-008: the published manifest is fetched and restored through the tiers (settled for
    the backfill), recorded ``remote-exec``; the spools hold the manifest's streams and
    nothing is stored locally by this run."""
    harness = make(executor=RemoteSuccessExecutor())
    executed, missed = asyncio.run(harness.run())
    record = executed.record
    assert missed
    assert isinstance(record, CompletedRecord)
    assert (record.state, record.source) == (RunState.SUCCEEDED, RunSource.REMOTE_EXEC)
    assert record.stdout_digest == digest_bytes(HASH, b"recorded\n")
    assert record.outputs_digest == manifest_for(harness.key).outputs_digest()
    assert harness.tiers.executed_documents == [b'{"published":true}\n']
    assert harness.tiers.settled == [(Tier.REMOTE, True)]
    assert harness.tiers.stored == []
    assert harness.observer.stdout == [b"live\n"]  # shown live once, not replayed


def test_a_remote_success_that_cannot_be_fetched_fails_the_task(make: Make) -> None:
    harness = make(executor=RemoteSuccessExecutor())
    harness.tiers.remote_broken = True
    executed, _ = asyncio.run(harness.run())
    record = executed.record
    assert isinstance(record, CompletedRecord)
    assert (record.state, record.source) == (RunState.FAILED, RunSource.REMOTE_EXEC)
    assert record.error == "ran remotely, but its result could not be fetched from the remote cache"
    assert harness.tiers.stored == []


def test_the_task_remote_field_and_the_run_setting_combine() -> None:
    """RX-001: ``never`` on either side keeps a task local; the task's own word wins else."""
    from hazremote.domain.model import RemotePolicy
    from hazremote.execute.lifecycle import task_remote_policy

    origin = Origin(file="app/haz.yml", key_path="tasks.build", line=1)
    table = [
        (RemotePolicy.NEVER, RemotePolicy.ALWAYS, RemotePolicy.NEVER),
        (RemotePolicy.AUTO, RemotePolicy.NEVER, RemotePolicy.NEVER),
        (RemotePolicy.AUTO, None, RemotePolicy.AUTO),
        (RemotePolicy.AUTO, RemotePolicy.ALWAYS, RemotePolicy.ALWAYS),
        (RemotePolicy.ALWAYS, RemotePolicy.AUTO, RemotePolicy.AUTO),
    ]
    for run, field_value, expected in table:
        spec = TaskSpec(
            name="b", action=CommandAction(argv=("true",)), remote=field_value, origin=origin
        )
        project = Project(name="app", dir="app", tags=(), tasks={"b": spec}, file="app/haz.yml")
        workspace = Workspace(
            root=Path("/ws"), settings=WorkspaceSettings(), projects=(project,), overlays=()
        )
        task = build_graph(workspace).tasks[TaskId("app", "b")]
        assert task_remote_policy(run, task) is expected, (run, field_value)


def test_the_worker_reaches_the_record_summary_json_and_the_epilogue(make: Make) -> None:
    """RX: source ``remote-exec`` with the worker id; local records carry no ``worker``."""
    from hazremote.execute.progress import format_task_line
    from hazremote.execute.records import summary_json

    harness = make(executor=RemoteSuccessExecutor())
    executed, _ = asyncio.run(harness.run())
    record = executed.record
    assert isinstance(record, CompletedRecord)
    assert record.worker == "w1"
    tasks: Any = summary_json(exit_code=0, duration_ms=1, records=[record])["tasks"]
    (entry,) = tasks
    assert (entry["source"], entry["worker"]) == ("remote-exec", "w1")
    assert format_task_line(record) == "⇡ app:build (remote exec on w1)"
    local = replace(record, source=RunSource.FRESH, worker=None)
    tasks = summary_json(exit_code=0, duration_ms=1, records=[local])["tasks"]
    (plain,) = tasks
    assert "worker" not in plain
