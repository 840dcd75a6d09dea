"""The scheduler with a scripted fake lifecycle: deterministic interleavings.

Spec coverage: EXEC-002 (readiness), EXEC-003 (canonical admission), EXEC-004/005 (caps),
EXEC-006/007 and MUTEX-001..007 (mutex only on a miss; waiting frees the slot; shared and
exclusive modes; hits never wait), EXEC-010/011 (cascade naming the root failure),
EXEC-012..015 (cancellation), EXEC-020 (output overlap), CACHE-007 (predecessor streams).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from hazremote.domain.digest import Digest
from hazremote.domain.model import (
    CommandAction,
    MutexMode,
    MutexSpec,
    Origin,
    Project,
    RefEntry,
    Task,
    TaskSpec,
    Workspace,
    WorkspaceSettings,
)
from hazremote.domain.refs import TaskId, parse_ref
from hazremote.execute.claims import OutputClaims, OutputOverlap
from hazremote.execute.observers import StreamFiles
from hazremote.execute.records import (
    CancelledRecord,
    CompletedRecord,
    RunSource,
    RunState,
    SkipCause,
    SkipRecord,
    TaskRecord,
)
from hazremote.execute.scheduler import (
    Cancellation,
    Executed,
    Miss,
    ProbeResult,
    SchedulingLimits,
    run_graph,
)
from hazremote.graph import TaskGraph, build_graph
from hazremote.keys.components import PredecessorStreams

ZERO = Digest(bytes(32))


def digest_of(text: str) -> Digest:
    return Digest(text.encode().ljust(32, b"\0")[:32])


@dataclass(kw_only=True)
class Spec:
    """How the fake lifecycle treats one task."""

    hit: bool = False
    exit_code: int = 0
    errored: bool = False
    outputs: tuple[str, ...] = ()
    raises: bool = False
    steps: int = 2  # event-loop turns the execution lasts


def make_graph(
    projects: dict[str, dict[str, dict[str, object]]],
    tags: dict[str, tuple[str, ...]] | None = None,
) -> TaskGraph:
    built = []
    for name, tasks in projects.items():
        specs = {}
        for task_name, fields in tasks.items():
            origin = Origin(file=f"{name}/haz.yml", key_path=f"tasks.{task_name}", line=1)

            def refs(
                key: str, fields: dict[str, object] = fields, origin: Origin = origin
            ) -> tuple[RefEntry, ...]:
                items: Sequence[str] = fields.get(key, ())  # type: ignore[assignment]
                return tuple(RefEntry(ref=parse_ref(r), origin=origin) for r in items)

            mutex = fields.get("mutex")
            specs[task_name] = TaskSpec(
                name=task_name,
                action=CommandAction(argv=("true",)),
                deps=refs("deps"),
                weak_deps=refs("weak"),
                mutex=mutex if isinstance(mutex, MutexSpec) else None,
                origin=origin,
            )
        built.append(
            Project(
                name=name,
                dir=name,
                tags=(tags or {}).get(name, ()),
                tasks=specs,
                file=f"{name}/haz.yml",
            )
        )
    return build_graph(
        Workspace(
            root=Path("/ws"), settings=WorkspaceSettings(), projects=tuple(built), overlays=()
        )
    )


@dataclass
class FakeLifecycle:
    specs: dict[str, Spec] = field(default_factory=dict)
    log: list[tuple[str, str]] = field(default_factory=list)
    running: set[str] = field(default_factory=set)
    max_running: int = 0
    overlaps: list[tuple[str, str]] = field(default_factory=list)
    seen_predecessors: dict[str, tuple[PredecessorStreams, ...]] = field(default_factory=dict)
    gate: dict[str, asyncio.Event] = field(default_factory=dict)
    intervals: dict[str, list[str]] = field(default_factory=dict)
    claims: OutputClaims = field(default_factory=OutputClaims)
    released: list[str] = field(default_factory=list)

    def spec(self, task: TaskId) -> Spec:
        return self.specs.get(str(task), Spec())

    async def probe(
        self, task: Task, predecessors: tuple[PredecessorStreams, ...], cancel: Cancellation
    ) -> ProbeResult[None]:
        name = str(task.id)
        self.log.append(("probe", name))
        self.seen_predecessors[name] = predecessors
        await asyncio.sleep(0)
        spec = self.spec(task.id)
        if spec.raises:
            raise RuntimeError("boom")
        if spec.errored:
            return Executed(record=self._record(task.id, RunState.FAILED, None, error="missing"))
        if spec.hit:
            self.log.append(("hit", name))
            return self._claimed(
                task.id, self._record(task.id, RunState.SUCCEEDED, RunSource.LOCAL_CACHE)
            )
        return Miss(task=task.id, state=None)

    async def execute(self, task: Task, miss: Miss[None], cancel: Cancellation) -> Executed:
        name = str(task.id)
        self.log.append(("start", name))
        self.running.add(name)
        self.max_running = max(self.max_running, len(self.running))
        for other in self.running - {name}:
            self.overlaps.append((other, name))
        spec = self.spec(task.id)
        try:
            if name in self.gate:
                waiter = asyncio.ensure_future(self.gate[name].wait())
                stop = asyncio.ensure_future(cancel.requested.wait())
                await asyncio.wait([waiter, stop], return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                stop.cancel()
                if cancel.requested.is_set():
                    return Executed(record=CancelledRecord(task=task.id, source=RunSource.FRESH))
            for _ in range(spec.steps):
                await asyncio.sleep(0)
        finally:
            self.running.discard(name)
            self.log.append(("end", name))
        state = RunState.SUCCEEDED if spec.exit_code == 0 else RunState.FAILED
        return self._claimed(
            task.id, self._record(task.id, state, RunSource.FRESH, exit_code=spec.exit_code)
        )

    def release(self, executed: Executed) -> None:
        self.released.append(str(executed.record.task))

    def _claimed(self, task: TaskId, record: CompletedRecord) -> Executed:
        """EXEC-020 as the real lifecycle does it: claim the outputs, fail on an overlap."""
        overlap = self.claims.claim(task, self.spec(task).outputs)
        if overlap is None:
            return Executed(record=record, outputs=self.spec(task).outputs)
        failed = replace(record, state=RunState.FAILED, source=None, error=overlap.describe())
        return Executed(record=failed, overlap=overlap)

    def _record(
        self,
        task: TaskId,
        state: RunState,
        source: RunSource | None,
        *,
        exit_code: int | None = None,
        error: str | None = None,
    ) -> CompletedRecord:
        return CompletedRecord(
            task=task,
            state=state,
            source=source,
            key=ZERO,
            duration_ms=1,
            exit_code=exit_code,
            error=error,
            stdout_digest=digest_of(f"out:{task}"),
            stderr_digest=digest_of(f"err:{task}"),
            outputs_digest=digest_of(f"outputs:{task}"),
        )


class Events:
    def __init__(self) -> None:
        self.started: list[TaskId] = []
        self.finished: list[TaskRecord] = []

    def task_started(self, task: TaskId) -> None:
        self.started.append(task)

    def task_finished(self, record: TaskRecord, *, streams: StreamFiles | None = None) -> None:
        self.finished.append(record)


def run(
    graph: TaskGraph,
    lifecycle: FakeLifecycle,
    *,
    jobs: int = 4,
    tag_caps: dict[str, int] | None = None,
    cancel_after: str | None = None,
    run_set: Sequence[TaskId] | None = None,
) -> dict[str, TaskRecord]:
    async def main() -> dict[str, TaskRecord]:
        cancel = run_cancel = Cancellation()
        events = Events()
        if cancel_after is not None:
            original = lifecycle.execute

            async def execute(task: Task, miss: Miss[None], cancel: Cancellation) -> Executed:
                if str(task.id) == cancel_after:
                    asyncio.get_running_loop().call_soon(run_cancel.request, 2)
                return await original(task, miss, cancel)

            lifecycle.execute = execute  # type: ignore[method-assign]  # wrap the fake
        outcome = await run_graph(
            graph=graph,
            run_set=run_set if run_set is not None else tuple(graph.tasks),
            lifecycle=lifecycle,
            events=events,
            limits=SchedulingLimits(jobs=jobs, tag_caps=tag_caps or {}),
            cancel=cancel,
        )
        assert sorted(r.task for r in events.finished) == sorted(outcome.records)
        return {str(k): v for k, v in outcome.records.items()}

    return asyncio.run(main())


def test_ready_tasks_are_admitted_in_canonical_order() -> None:
    """EXEC-003: with one slot, independent tasks run in (project, task) order."""
    graph = make_graph({"b": {"x": {}, "a": {}}, "a": {"z": {}}})
    life = FakeLifecycle()
    run(graph, life, jobs=1)
    assert [n for kind, n in life.log if kind == "start"] == ["a:z", "b:a", "b:x"]


def test_hard_predecessors_finish_before_dependants_start() -> None:
    """EXEC-002: a task is ready only when its hard predecessors succeeded."""
    graph = make_graph({"app": {"build": {"deps": ["lib:build"]}}, "lib": {"build": {}}})
    life = FakeLifecycle()
    records = run(graph, life)
    assert life.log.index(("end", "lib:build")) < life.log.index(("probe", "app:build"))
    assert records["app:build"].state is RunState.SUCCEEDED


def test_global_cap_bounds_tasks_in_flight() -> None:
    """EXEC-004: never more than `jobs` tasks at once."""
    graph = make_graph({f"p{i}": {"build": {}} for i in range(8)})
    life = FakeLifecycle(specs={f"p{i}:build": Spec(steps=5) for i in range(8)})
    run(graph, life, jobs=3)
    assert life.max_running == 3


def test_tag_cap_bounds_tasks_of_tagged_projects_without_blocking_others() -> None:
    """EXEC-005: `heavy: 1` serialises heavy projects; others still run beside them."""
    graph = make_graph(
        {"h1": {"t": {}}, "h2": {"t": {}}, "l1": {"t": {}}},
        tags={"h1": ("heavy",), "h2": ("heavy",)},
    )
    life = FakeLifecycle(specs={n: Spec(steps=5) for n in ("h1:t", "h2:t", "l1:t")})
    run(graph, life, jobs=3, tag_caps={"heavy": 1})
    assert ("h1:t", "h2:t") not in life.overlaps
    assert ("h1:t", "l1:t") in life.overlaps


def test_exclusive_mutex_serialises_misses() -> None:
    """MUTEX: two misses holding one exclusive mutex never overlap."""
    db = MutexSpec(name="db")
    graph = make_graph({"a": {"t": {"mutex": db}}, "b": {"t": {"mutex": db}}})
    life = FakeLifecycle(specs={"a:t": Spec(steps=5), "b:t": Spec(steps=5)})
    run(graph, life)
    assert life.overlaps == []


def test_shared_mutex_holders_coexist_but_exclusive_excludes_them() -> None:
    shared = MutexSpec(name="db", mode=MutexMode.SHARED)
    exclusive = MutexSpec(name="db")
    graph = make_graph(
        {
            "a": {"t": {"mutex": shared}},
            "b": {"t": {"mutex": shared}},
            "c": {"t": {"mutex": exclusive}},
        }
    )
    life = FakeLifecycle(specs={n: Spec(steps=5) for n in ("a:t", "b:t", "c:t")})
    run(graph, life)
    assert ("a:t", "b:t") in life.overlaps
    assert not any("c:t" in pair for pair in life.overlaps)


def test_project_scoped_mutex_only_excludes_within_the_project() -> None:
    """MUTEX: `~:db` is one lock per project."""
    scoped = MutexSpec(name="db", project_scoped=True)
    graph = make_graph(
        {"a": {"t": {"mutex": scoped}, "u": {"mutex": scoped}}, "b": {"t": {"mutex": scoped}}}
    )
    life = FakeLifecycle(specs={n: Spec(steps=5) for n in ("a:t", "a:u", "b:t")})
    run(graph, life)
    assert ("a:t", "a:u") not in life.overlaps
    assert ("a:t", "b:t") in life.overlaps


def test_cache_hits_never_wait_for_a_mutex() -> None:
    """EXEC-007: a hit completes while another task holds its mutex."""
    db = MutexSpec(name="db")
    graph = make_graph({"a": {"t": {"mutex": db}}, "b": {"t": {"mutex": db}}})
    life = FakeLifecycle(specs={"b:t": Spec(hit=True)}, gate={"a:t": asyncio.Event()})

    async def release_later() -> None:
        while ("hit", "b:t") not in life.log:
            await asyncio.sleep(0)
        life.gate["a:t"].set()

    original = life.execute
    helpers: list[asyncio.Future[None]] = []

    async def execute(task: Task, miss: Miss[None], cancel: Cancellation) -> Executed:
        helpers.append(asyncio.ensure_future(release_later()))
        return await original(task, miss, cancel)

    life.execute = execute  # type: ignore[method-assign]  # wrap the fake
    records = run(graph, life)
    assert life.log.index(("hit", "b:t")) < life.log.index(("end", "a:t"))
    assert records["b:t"].state is RunState.SUCCEEDED


def test_a_task_waiting_for_its_mutex_frees_its_slot() -> None:
    """EXEC-007(3): a miss whose mutex is held goes back to waiting; others use the slot."""
    db = MutexSpec(name="db")
    graph = make_graph({"a": {"t": {"mutex": db}}, "b": {"t": {"mutex": db}}, "c": {"t": {}}})
    life = FakeLifecycle(specs={"a:t": Spec(steps=20)})
    run(graph, life, jobs=2)
    assert life.log.index(("start", "c:t")) < life.log.index(("end", "a:t"))
    assert life.log.index(("end", "a:t")) < life.log.index(("start", "b:t"))


def test_failure_skips_transitive_dependants_naming_the_root() -> None:
    """EXEC-010/011: independent branches go on; descendants name the root failure."""
    graph = make_graph(
        {
            "a": {"build": {}, "test": {"deps": ["~:build"]}, "ship": {"deps": ["~:test"]}},
            "b": {"build": {}},
        }
    )
    life = FakeLifecycle(specs={"a:build": Spec(exit_code=2)})
    records = run(graph, life)
    assert records["a:build"].state is RunState.FAILED
    assert records["b:build"].state is RunState.SUCCEEDED
    for name in ("a:test", "a:ship"):
        record = records[name]
        assert isinstance(record, SkipRecord)
        assert (record.cause, str(record.upstream)) == (SkipCause.UPSTREAM_FAILED, "a:build")


def test_errored_task_skips_dependants_as_upstream_errored() -> None:
    graph = make_graph({"a": {"build": {}, "test": {"deps": ["~:build"]}}})
    life = FakeLifecycle(specs={"a:build": Spec(errored=True)})
    records = run(graph, life)
    record = records["a:test"]
    assert isinstance(record, SkipRecord)
    assert record.cause is SkipCause.UPSTREAM_ERRORED


def test_several_failed_roots_name_the_first_in_canonical_order() -> None:
    graph = make_graph({"z": {"b": {}}, "y": {"b": {}}, "app": {"t": {"deps": ["z:b", "y:b"]}}})
    life = FakeLifecycle(specs={"z:b": Spec(exit_code=1), "y:b": Spec(exit_code=1)})
    record = run(graph, life)["app:t"]
    assert isinstance(record, SkipRecord)
    assert str(record.upstream) == "y:b"


def test_soft_predecessor_orders_but_its_failure_does_not_block() -> None:
    """DAG-009/EXEC-002: weakDeps order when both run; a failed soft pred still lets it run."""
    graph = make_graph({"a": {"build": {"weak": ["~:lint"]}, "lint": {}}})
    life = FakeLifecycle(specs={"a:lint": Spec(exit_code=1, steps=5)})
    records = run(graph, life, jobs=2)
    assert life.log.index(("end", "a:lint")) < life.log.index(("probe", "a:build"))
    assert records["a:build"].state is RunState.SUCCEEDED


def test_soft_predecessor_outside_the_run_does_not_order() -> None:
    graph = make_graph({"a": {"build": {"weak": ["~:lint"]}, "lint": {}}})
    life = FakeLifecycle()
    records = run(graph, life, run_set=[TaskId("a", "build")])
    assert list(records) == ["a:build"]


def test_predecessor_stream_and_outputs_digests_flow_into_the_probe() -> None:
    """CACHE-007: the probe receives each hard predecessor's stdout, stderr and outputs
    digests (chapter revision 1 added the outputs digest)."""
    graph = make_graph({"a": {"gen": {}, "build": {"deps": ["~:gen"]}}})
    life = FakeLifecycle(specs={"a:gen": Spec(hit=True)})
    run(graph, life)
    assert life.seen_predecessors["a:build"] == (
        PredecessorStreams(
            task=TaskId("a", "gen"),
            stdout=digest_of("out:a:gen"),
            stderr=digest_of("err:a:gen"),
            outputs=digest_of("outputs:a:gen"),
        ),
    )


def test_cancellation_stops_admission_and_cancels_the_rest() -> None:
    """EXEC-012: running tasks see the request; tasks never started are cancelled."""
    graph = make_graph({"a": {"t": {}}, "b": {"t": {"deps": ["a:t"]}}, "c": {"t": {}}})
    life = FakeLifecycle(gate={"a:t": asyncio.Event()})
    records = run(graph, life, jobs=1, cancel_after="a:t")
    assert isinstance(records["a:t"], CancelledRecord)
    assert isinstance(records["b:t"], CancelledRecord)
    assert isinstance(records["c:t"], CancelledRecord)
    assert ("start", "c:t") not in life.log


def test_output_overlap_stops_admission() -> None:
    """EXEC-020: the task refused for an overlap fails; admission stops; tasks not started
    — its dependants and independent ones alike — are skipped naming it."""
    graph = make_graph(
        {
            "a": {"t": {}},
            "b": {"t": {}},
            "c": {"t": {"deps": ["a:t", "b:t"]}},
            "d": {"t": {"deps": ["a:t"]}},
        }
    )
    life = FakeLifecycle(specs={"a:t": Spec(outputs=("/out/x",)), "b:t": Spec(outputs=("/out/x",))})
    outcome = asyncio.run(
        run_graph(
            graph=graph,
            run_set=graph.run_set(graph.tasks),
            lifecycle=life,
            events=Events(),
            limits=SchedulingLimits(jobs=1),
            cancel=Cancellation(),
        )
    )
    records = outcome.records
    assert records[TaskId("a", "t")].state is RunState.SUCCEEDED
    assert records[TaskId("b", "t")].state is RunState.FAILED
    assert outcome.violation is SkipCause.OUTPUT_OVERLAP
    assert outcome.overlap == OutputOverlap(
        path="/out/x", holder=TaskId("a", "t"), claimant=TaskId("b", "t")
    )
    for name in ("c", "d"):
        record = records[TaskId(name, "t")]
        assert isinstance(record, SkipRecord)
        assert record.cause is SkipCause.OUTPUT_OVERLAP
        assert str(record.upstream) == "b:t"
    assert ("start", "d:t") not in life.log


def test_a_lifecycle_bug_fails_only_that_task() -> None:
    graph = make_graph({"a": {"t": {}}, "b": {"t": {}}})
    life = FakeLifecycle(specs={"a:t": Spec(raises=True)})
    records = run(graph, life)
    failed = records["a:t"]
    assert isinstance(failed, CompletedRecord)
    assert failed.error is not None
    assert "boom" in failed.error
    assert records["b:t"].state is RunState.SUCCEEDED


@pytest.mark.parametrize("jobs", [1, 2, 5])
def test_every_task_of_the_run_set_gets_exactly_one_record(jobs: int) -> None:
    graph = make_graph(
        {
            f"p{i}": {"b": {"deps": [f"p{i - 1}:b"] if i else []}, "t": {"deps": ["~:b"]}}
            for i in range(6)
        }
    )
    life = FakeLifecycle(specs={"p3:b": Spec(exit_code=1)})
    records = run(graph, life, jobs=jobs)
    assert sorted(records) == sorted(str(t) for t in graph.tasks)
    assert [n for n, r in records.items() if r.state is RunState.SUCCEEDED] == [
        "p0:b",
        "p0:t",
        "p1:b",
        "p1:t",
        "p2:b",
        "p2:t",
    ]


def test_every_record_is_reported_once_and_released_after() -> None:
    """Issue 14: the scheduler is the one reporter; a lifecycle's result is released
    (its spools freed) once its record was reported, a scheduler-made record never."""
    graph = make_graph({"a": {"t": {}}, "b": {"t": {"deps": ["a:t"]}}, "c": {"t": {}}})
    life = FakeLifecycle(specs={"a:t": Spec(exit_code=1), "c:t": Spec(hit=True)})
    records = run(graph, life)
    assert records["b:t"].state is RunState.SKIPPED
    assert sorted(life.released) == ["a:t", "c:t"]
