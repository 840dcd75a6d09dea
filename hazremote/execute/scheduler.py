"""The scheduler: which task runs when (``run_graph``), and the one reporter of finished tasks.

Spec coverage:
* EXEC-001 — the caller passes the run set (targets + transitive hard predecessors).
* EXEC-002 — ready: hard predecessors succeeded, soft predecessors in the run finished.
* EXEC-003 — ready tasks are admitted in canonical order.
* EXEC-004, EXEC-005 — a global cap and per-tag caps; a blocked task does not block later ones.
* EXEC-006, EXEC-007 — a task is probed first (key + lookup, no mutex); only a miss needs one.
* MUTEX-001..007 — a miss whose mutex is taken goes back to waiting; hits never touch mutexes.
* EXEC-010, EXEC-011 — a failure skips only its hard descendants, naming the first root failure.
* EXEC-012..015 — cancellation stops admission; tasks never started are recorded ``cancelled``.
* EXEC-020 — an overlap (:attr:`Executed.overlap`) stops admission; unstarted tasks are skipped.
* CACHE-007 — each hard predecessor's stream and outputs digests flow into its dependants' probes.
Out of scope: the per-task lifecycle (:mod:`.lifecycle`), rendering, and EXEC-019 (DAG-014
already rejects every runtime cycle: docs/decisions.md).
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from hazremote.domain.model import MutexMode, Task
from hazremote.domain.refs import TaskId
from hazremote.execute.claims import OutputOverlap
from hazremote.execute.observers import StreamFiles
from hazremote.execute.records import (
    CancelledRecord,
    CompletedRecord,
    RunState,
    SkipCause,
    SkipRecord,
    TaskRecord,
)
from hazremote.graph import TaskGraph
from hazremote.keys.components import PredecessorStreams

__all__ = [
    "Cancellation",
    "Executed",
    "Miss",
    "ProbeResult",
    "RunOutcome",
    "SchedulerEvents",
    "SchedulingLimits",
    "State",
    "TaskLifecycle",
    "run_graph",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Executed:
    """A finished task and the workspace paths it materialised.

    ``overlap`` is set when the lifecycle refused the task because another task of the run
    materialised one of its paths (EXEC-020); the record is then a failure saying so.
    """

    record: TaskRecord
    outputs: tuple[str, ...] = ()
    overlap: OutputOverlap | None = None
    #: A fresh run's complete streams (spool files), handed to the report of its record;
    #: the lifecycle removes them in :meth:`TaskLifecycle.release`.
    streams: StreamFiles | None = None


#: What a lifecycle carries from a probe's miss to its execution (the derived key, for
#: :class:`~hazremote.execute.lifecycle.LocalLifecycle`); the scheduler never looks inside.
State = TypeVar("State")


@dataclass(frozen=True, slots=True, kw_only=True)
class Miss(Generic[State]):
    """A probe that found no usable entry; ``state`` is the lifecycle's own carry-over."""

    task: TaskId
    state: State


#: A probe's answer: a finished task (hit, key error, refusal) or a miss to execute.
ProbeResult = Executed | Miss[State]


class TaskLifecycle(Protocol[State]):
    """The two halves of one task's lifecycle (EXEC-007), driven by the scheduler."""

    async def probe(
        self, task: Task, predecessors: tuple[PredecessorStreams, ...], cancel: Cancellation
    ) -> ProbeResult[State]:
        """Derive the key and look it up; restore on a hit. Never takes a mutex."""
        ...

    async def execute(self, task: Task, miss: Miss[State], cancel: Cancellation) -> Executed:
        """Run the task (its mutex is held), classify, store on success."""
        ...

    def release(self, executed: Executed) -> None:
        """``executed`` was reported: free what it holds (its spooled streams)."""
        ...


class SchedulerEvents(Protocol):
    """What the run reports; :meth:`task_finished` is called exactly once per task."""

    def task_started(self, task: TaskId) -> None: ...
    def task_finished(self, record: TaskRecord, *, streams: StreamFiles | None = None) -> None: ...


class Cancellation:
    """EXEC-012..015: ``requested`` stops admission; ``kill_now`` skips the grace period."""

    def __init__(self) -> None:
        self.requested = asyncio.Event()
        self.kill_now = asyncio.Event()
        self.signal: int | None = None

    def request(self, signal: int | None = None) -> None:
        """First call: graceful. A second call: kill at once (a second SIGINT)."""
        if self.requested.is_set():
            self.kill_now.set()
        if self.signal is None:
            self.signal = signal
        self.requested.set()


@dataclass(frozen=True, slots=True, kw_only=True)
class SchedulingLimits:
    jobs: int
    tag_caps: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunOutcome:
    records: Mapping[TaskId, TaskRecord]
    duration_ms: int
    cancelled: bool
    violation: SkipCause | None
    overlap: OutputOverlap | None = None


class _Run(Generic[State]):
    def __init__(
        self,
        *,
        graph: TaskGraph,
        run_set: Sequence[TaskId],
        lifecycle: TaskLifecycle[State],
        events: SchedulerEvents,
        limits: SchedulingLimits,
        cancel: Cancellation,
    ) -> None:
        self.graph = graph
        self.order = sorted(run_set)
        self.in_run = frozenset(self.order)
        self.lifecycle = lifecycle
        self.events = events
        self.limits = limits
        self.cancel = cancel
        self.records: dict[TaskId, TaskRecord] = {}
        self.waiting: set[TaskId] = set(self.order)  # never started
        self.mutex_waiting: dict[TaskId, Miss[State]] = {}
        self.in_flight: dict[asyncio.Future[ProbeResult[State]], tuple[TaskId, bool]] = {}
        self.tag_load: dict[str, int] = {}
        self.holds: dict[tuple[str, str], tuple[MutexMode, int]] = {}
        self.violation: SkipCause | None = None
        self.violation_task: TaskId | None = None
        self.overlap: OutputOverlap | None = None
        # EXEC-002, incrementally: how many predecessors each task still waits for, and who
        # waits on whom; a task with no blockers left joins `ready` (kept in canonical order).
        self.blockers: dict[TaskId, int] = {}
        self.hard_dependants: dict[TaskId, list[TaskId]] = {t: [] for t in self.order}
        self.soft_dependants: dict[TaskId, list[TaskId]] = {t: [] for t in self.order}
        for task in self.order:
            hard = graph.hard.get(task, ())
            soft = [p for p in graph.soft.get(task, ()) if p in self.in_run]
            for pred in hard:
                self.hard_dependants[pred].append(task)
            for pred in soft:
                self.soft_dependants[pred].append(task)
            self.blockers[task] = len(hard) + len(soft)
        # Tasks that may start now — ready ones and mutex waiters — as a heap in canonical
        # order; one admission pass pops until the slots are full (EXEC-003).
        self.candidates: list[TaskId] = [t for t in self.order if self.blockers[t] == 0]

    # -- readiness and admission -------------------------------------------------------
    def _unblock(self, record: TaskRecord) -> None:
        succeeded = record.state is RunState.SUCCEEDED
        dependants = self.soft_dependants.get(record.task, [])
        if succeeded:
            dependants = dependants + self.hard_dependants.get(record.task, [])
        for task in dependants:
            self.blockers[task] -= 1
            if self.blockers[task] == 0 and task in self.waiting:
                heapq.heappush(self.candidates, task)

    def _caps_allow(self, task: TaskId) -> bool:
        if len(self.in_flight) >= self.limits.jobs:
            return False
        for tag in self.graph.tags.get(task.project, ()):
            cap = self.limits.tag_caps.get(tag)
            if cap is not None and self.tag_load.get(tag, 0) >= cap:
                return False
        return True

    def _mutex_compatible(self, task: TaskId) -> bool:
        spec = self.graph.tasks[task].spec.mutex
        if spec is None:
            return True
        held = self.holds.get(spec.hold_key(task.project))
        if held is None:
            return True
        return held[0] is MutexMode.SHARED and spec.mode is MutexMode.SHARED

    def _take(self, task: TaskId, *, mutex: bool) -> None:
        for tag in self.graph.tags.get(task.project, ()):
            if tag in self.limits.tag_caps:
                self.tag_load[tag] = self.tag_load.get(tag, 0) + 1
        spec = self.graph.tasks[task].spec.mutex
        if mutex and spec is not None:
            key = spec.hold_key(task.project)
            mode, count = self.holds.get(key, (spec.mode, 0))
            self.holds[key] = (mode, count + 1)

    def _release(self, task: TaskId, *, mutex: bool) -> None:
        for tag in self.graph.tags.get(task.project, ()):
            if tag in self.tag_load:
                self.tag_load[tag] -= 1
        spec = self.graph.tasks[task].spec.mutex
        if mutex and spec is not None:
            key = spec.hold_key(task.project)
            mode, count = self.holds[key]
            if count <= 1:
                del self.holds[key]
            else:
                self.holds[key] = (mode, count - 1)

    def _admission_open(self) -> bool:
        return not self.cancel.requested.is_set() and self.violation is None

    def _admit(self) -> None:
        if not self._admission_open():
            return
        deferred: list[TaskId] = []  # blocked by a tag cap or a mutex: later tasks may go
        while self.candidates and len(self.in_flight) < self.limits.jobs:
            task = heapq.heappop(self.candidates)
            miss = self.mutex_waiting.get(task)
            if not self._caps_allow(task) or (
                miss is not None and not self._mutex_compatible(task)
            ):
                deferred.append(task)
                continue
            if miss is not None:
                del self.mutex_waiting[task]
                self._take(task, mutex=True)
                self._spawn(task, self._execute(task, miss), executing=True)
            else:
                self.waiting.discard(task)
                self._take(task, mutex=False)
                self.events.task_started(task)
                self._spawn(task, self._probe(task), executing=False)
        for task in deferred:
            heapq.heappush(self.candidates, task)

    def _spawn(
        self, task: TaskId, coro: Coroutine[object, object, ProbeResult[State]], *, executing: bool
    ) -> None:
        self.in_flight[asyncio.ensure_future(coro)] = (task, executing)

    async def _reported(self, result: ProbeResult[State]) -> ProbeResult[State]:
        """Report a lifecycle's finished task the moment it returns (completion order)."""
        if isinstance(result, Executed):
            try:
                self._report(result.record, streams=result.streams)
            finally:
                self.lifecycle.release(result)
        return result

    def _report(self, record: TaskRecord, *, streams: StreamFiles | None = None) -> None:
        """The one place a finished task is reported."""
        self.events.task_finished(record, streams=streams)

    async def _probe(self, task: TaskId) -> ProbeResult[State]:
        preds = tuple(
            PredecessorStreams(
                task=p, stdout=r.stdout_digest, stderr=r.stderr_digest, outputs=r.outputs_digest
            )
            for p in self.graph.hard.get(task, ())
            if isinstance(r := self.records[p], CompletedRecord)
            and r.stdout_digest is not None
            and r.stderr_digest is not None
            and r.outputs_digest is not None
        )
        return await self._reported(
            await self.lifecycle.probe(self.graph.tasks[task], preds, self.cancel)
        )

    async def _execute(self, task: TaskId, miss: Miss[State]) -> ProbeResult[State]:
        return await self._reported(
            await self.lifecycle.execute(self.graph.tasks[task], miss, self.cancel)
        )

    # -- completion ------------------------------------------------------------------
    def _complete(self, future: asyncio.Future[ProbeResult[State]]) -> None:
        task, executing = self.in_flight.pop(future)
        self._release(task, mutex=executing)
        error = future.exception()
        if error is not None:
            # A lifecycle must not raise; if one does, the task fails and the run goes on.
            self._finish(
                CompletedRecord(
                    task=task,
                    state=RunState.FAILED,
                    source=None,
                    key=None,
                    duration_ms=0,
                    error=f"internal error: {error!r}",
                )
            )
            return
        result = future.result()
        if isinstance(result, Miss):
            self.mutex_waiting[task] = result
            heapq.heappush(self.candidates, task)
            return
        if result.overlap is not None and self.violation is None:
            self.violation = SkipCause.OUTPUT_OVERLAP
            self.violation_task = task
            self.overlap = result.overlap
        self._finish(result.record, reported=True)

    def _finish(self, record: TaskRecord, *, reported: bool = False) -> None:
        """Settle ``record``; report it unless :meth:`_reported` already did (a
        lifecycle's record) — the scheduler's own records are reported here."""
        self.records[record.task] = record
        if not reported:
            self._report(record)
        self._unblock(record)

    # -- the loop ----------------------------------------------------------------------
    async def run(self) -> RunOutcome:
        started = time.monotonic()
        cancel_wait: asyncio.Future[Any] = asyncio.ensure_future(self.cancel.requested.wait())
        try:
            while True:
                self._admit()
                if not self.in_flight:
                    break
                waiters: list[asyncio.Future[Any]] = list(self.in_flight)
                if not cancel_wait.done():
                    waiters.append(cancel_wait)  # wake up to stop admission at once
                done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                for future in done:
                    if future is not cancel_wait:
                        self._complete(future)
        finally:
            cancel_wait.cancel()
        self._settle_unstarted()
        return RunOutcome(
            records=dict(sorted(self.records.items())),  # canonical order
            duration_ms=int((time.monotonic() - started) * 1000),
            cancelled=self.cancel.requested.is_set(),
            violation=self.violation,
            overlap=self.overlap,
        )

    def _root_failure(self, task: TaskId) -> tuple[TaskId, SkipCause] | None:
        """The first (canonical) failed/errored/cancelled transitive hard predecessor."""
        seen: set[TaskId] = set()
        stack = list(self.graph.hard.get(task, ()))
        roots: list[tuple[TaskId, SkipCause]] = []
        while stack:
            pred = stack.pop()
            if pred in seen:
                continue
            seen.add(pred)
            record = self.records.get(pred)
            if isinstance(record, CompletedRecord) and record.state is RunState.FAILED:
                cause = SkipCause.UPSTREAM_ERRORED if record.errored else SkipCause.UPSTREAM_FAILED
                roots.append((pred, cause))
            elif isinstance(record, CancelledRecord):
                roots.append((pred, SkipCause.UPSTREAM_CANCELLED))
            elif record is None or isinstance(record, SkipRecord):
                stack.extend(self.graph.hard.get(pred, ()))
        return min(roots) if roots else None

    def _settle_unstarted(self) -> None:
        for task in sorted([*self.waiting, *self.mutex_waiting]):
            root = self._root_failure(task)
            if root is not None and self.violation is not None and root[0] == self.violation_task:
                root = (root[0], self.violation)  # the refused task's dependants: same cause
            record: TaskRecord
            if root is not None and root[1] is not SkipCause.UPSTREAM_CANCELLED:
                record = SkipRecord(task=task, cause=root[1], upstream=root[0])
            elif self.cancel.requested.is_set():
                record = CancelledRecord(task=task)
            elif self.violation is not None:
                record = SkipRecord(task=task, cause=self.violation, upstream=self.violation_task)
            elif root is not None:
                record = SkipRecord(task=task, cause=root[1], upstream=root[0])
            else:  # pragma: no cover - every unstarted task has one of the causes above
                raise AssertionError(f"{task} never became ready")
            self._finish(record)
        self.waiting.clear()
        self.mutex_waiting.clear()


async def run_graph(
    *,
    graph: TaskGraph,
    run_set: Sequence[TaskId],
    lifecycle: TaskLifecycle[State],
    events: SchedulerEvents,
    limits: SchedulingLimits,
    cancel: Cancellation,
) -> RunOutcome:
    """Run ``run_set`` to completion (or cancellation) and return one record per task."""
    run = _Run(
        graph=graph,
        run_set=run_set,
        lifecycle=lifecycle,
        events=events,
        limits=limits,
        cancel=cancel,
    )
    return await run.run()
