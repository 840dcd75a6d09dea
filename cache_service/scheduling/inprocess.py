"""The in-process execution queue: one service replica, one asyncio event loop (RX-010).

Every method runs to completion without awaiting, so the loop serialises them and no lock is
needed. Time comes from an injected monotonic clock; :meth:`expire_due` is called by
:meth:`run_expiry` in production and directly by tests.

Spec coverage:
* RX-003 — a pool (queue) per platform property set; a worker takes actions whose properties
  are a subset of its own; priority = remaining critical path (higher first), FIFO within a
  priority, round-robin between submitters of equal priority; leases kept by heartbeats,
  requeued on expiry (or a lost worker lease) up to ``retry_limit``, then failed.
* RX-003 — a late result, log or heartbeat of an expired, cancelled or superseded lease is
  refused, so an execution completes once.
* RX-003 — a reconnecting worker resumes the leases it still holds; the others return.
* RX-006 — identical in-flight ``(namespace, key)`` execute once; later submitters attach
  and get the current state plus the retained log tail, then the same live updates.
* RX-007 — cancelling withdraws one submitter; the worker is told to stop only when none
  is left.
* RX-001 — ``wait_for_worker=False`` fails at once when no live worker matches.
Out of scope: admission (:mod:`.admission`), the wire, publishing manifests (the worker).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from cache_service.scheduling.queue import NullSchedulerObserver, SchedulerObserver
from cache_service.scheduling.values import (
    CancelLease,
    Cancelled,
    Completed,
    ExecutionUpdate,
    Failed,
    FailureReason,
    Leased,
    LeaseGrant,
    LogChunk,
    LogStream,
    PoolStatus,
    Queued,
    ReleaseReason,
    Subscription,
    WorkerLink,
    WorkResult,
)
from hazremote.domain.digest import Digest
from hazremote.remote.action import Platform, RemoteAction

__all__ = ["InProcessExecutionQueue", "SchedulingSettings"]


@dataclass(frozen=True, slots=True, kw_only=True)
class SchedulingSettings:
    """Tunables of the in-process queue.

    Attributes:
        lease_duration_s: A lease not heartbeated for this long expires.
        retry_limit: How often a lost action is requeued before it fails.
        log_retention_bytes: Log bytes per execution kept for late attachers (the tail).
    """

    lease_duration_s: float = 30.0
    retry_limit: int = 2
    log_retention_bytes: int = 4 * 1024 * 1024

    @property
    def heartbeat_interval_s(self) -> float:
        """What workers are told: three heartbeats per lease duration."""
        return self.lease_duration_s / 3


@dataclass(eq=False, slots=True, kw_only=True)
class _Lease:
    lease_id: str
    execution: _Execution
    link: WorkerLink | None  # None while its worker is disconnected (resumable until expiry)
    worker_id: str
    expires_at: float
    active: bool = True  # False once cancelled: it holds its slot until released or expired


@dataclass(eq=False, slots=True, kw_only=True)
class _Execution:
    execution_id: str
    action: RemoteAction
    pool: Platform
    placed_by: str  # the submitter whose turn it takes in the round-robin
    seq: int
    enqueued_at: float
    wait_for_worker: bool
    waiters: set[str] = field(default_factory=set)
    subscriptions: list[Subscription] = field(default_factory=list)
    lease: _Lease | None = None
    attempts: int = 0
    losses: int = 0
    state: Queued | Leased | None = None
    position: int = -1
    log: deque[LogChunk] = field(default_factory=deque)
    log_bytes: int = 0
    received: dict[LogStream, int] = field(default_factory=dict)
    done: bool = False


class _Pool:
    """Queued executions of one platform property set: bands by priority, each a round-robin
    of submitters, each a FIFO."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.bands: dict[int, OrderedDict[str, deque[_Execution]]] = {}
        self.depth = 0

    def push(self, execution: _Execution, *, front: bool = False) -> None:
        band = self.bands.setdefault(execution.action.priority_ms, OrderedDict())
        fifo = band.get(execution.placed_by)
        if fifo is None:
            fifo = band[execution.placed_by] = deque()
        if front:
            fifo.appendleft(execution)
            band.move_to_end(execution.placed_by, last=False)
        else:
            fifo.append(execution)
        self.depth += 1

    def head(self) -> _Execution | None:
        if not self.bands:
            return None
        band = self.bands[max(self.bands)]
        return next(iter(band.values()))[0]

    def pop_head(self) -> _Execution:
        priority = max(self.bands)
        band = self.bands[priority]
        submitter, fifo = next(iter(band.items()))
        execution = fifo.popleft()
        if fifo:
            band.move_to_end(submitter)  # the next submitter's turn
        else:
            del band[submitter]
        if not band:
            del self.bands[priority]
        self.depth -= 1
        return execution

    def remove(self, execution: _Execution) -> None:
        priority = execution.action.priority_ms
        band = self.bands[priority]
        fifo = band[execution.placed_by]
        fifo.remove(execution)
        if not fifo:
            del band[execution.placed_by]
        if not band:
            del self.bands[priority]
        self.depth -= 1

    def in_dispatch_order(self) -> list[_Execution]:
        """The order :meth:`pop_head` would take them in (higher priority first, then the
        submitters' round-robin)."""
        order: list[_Execution] = []
        for priority in sorted(self.bands, reverse=True):
            fifos = list(self.bands[priority].values())
            for index in range(max(len(f) for f in fifos)):
                order.extend(f[index] for f in fifos if index < len(f))
        return order


class InProcessExecutionQueue:
    """The embedded :class:`~cache_service.scheduling.queue.ExecutionQueue`.

    Args:
        settings: Lease duration, retry limit, log retention.
        clock: Monotonic seconds (``time.monotonic``; tests inject a fake).
        new_id: Fresh unique ids for executions and leases.
        observer: Metrics hooks.
    """

    def __init__(
        self,
        *,
        settings: SchedulingSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
        observer: SchedulerObserver | None = None,
    ) -> None:
        self._settings = settings or SchedulingSettings()
        self._clock = clock
        self._new_id = new_id
        self._observer: SchedulerObserver = observer or NullSchedulerObserver()
        self._pools: dict[Platform, _Pool] = {}
        self._executions: dict[str, _Execution] = {}
        self._in_flight: dict[tuple[str, bytes], _Execution] = {}
        self._leases: dict[str, _Lease] = {}
        self._links: dict[str, WorkerLink] = {}  # by worker id, in connection order
        self._draining: set[WorkerLink] = set()
        self._reported: set[Platform] = set()  # pools whose worker gauges were reported
        self._seq = 0

    @property
    def settings(self) -> SchedulingSettings:
        return self._settings

    # --- clients ------------------------------------------------------------------------------

    async def submit(
        self, action: RemoteAction, *, submitter: str, wait_for_worker: bool
    ) -> Subscription:
        existing = self._in_flight.get((action.namespace, action.key.raw))
        if existing is not None:  # RX-006
            existing.wait_for_worker = existing.wait_for_worker or wait_for_worker
            return self._subscribe(existing, submitter)
        execution_id = self._new_id()
        if not wait_for_worker and not any(
            link.platform.satisfies(action.platform) for link in self._links.values()
        ):
            subscription = Subscription(
                execution_id=execution_id, namespace=action.namespace, submitter=submitter
            )
            subscription.push(_no_worker(action.platform))
            self._observer.execution_finished(
                pool=str(action.platform), outcome=FailureReason.NO_WORKER_FOR_PLATFORM.value
            )
            return subscription
        self._seq += 1
        execution = _Execution(
            execution_id=execution_id,
            action=action,
            pool=action.platform,
            placed_by=submitter,
            seq=self._seq,
            enqueued_at=self._clock(),
            wait_for_worker=wait_for_worker,
        )
        self._executions[execution_id] = execution
        self._in_flight[(action.namespace, action.key.raw)] = execution
        subscription = self._subscribe(execution, submitter)
        self._enqueue(execution)
        self._dispatch()
        return subscription

    async def attach(self, execution_id: str, *, submitter: str) -> Subscription | None:
        execution = self._executions.get(execution_id)
        if execution is None or execution.done:
            return None
        return self._subscribe(execution, submitter)

    async def cancel(self, execution_id: str, *, submitter: str) -> bool | None:
        execution = self._executions.get(execution_id)
        if execution is None:
            return None
        if execution.done or submitter not in execution.waiters:
            return False
        execution.waiters.discard(submitter)
        others = bool(execution.waiters)
        for subscription in [s for s in execution.subscriptions if s.submitter == submitter]:
            subscription.push(Cancelled(execution_cancelled=not others))
            execution.subscriptions.remove(subscription)
        if others:
            return False
        if execution.lease is None:
            self._pools[execution.pool].remove(execution)
            self._after_pool_change(execution.pool)
        else:
            lease = execution.lease
            lease.active = False  # holds its slot until the worker releases it (or expiry)
            if lease.link is not None:
                lease.link.send(CancelLease(lease_id=lease.lease_id))
        self._finish(execution, None, outcome="cancelled")
        return True

    # --- workers ------------------------------------------------------------------------------

    async def connect_worker(
        self, *, worker_id: str, slots: int, platform: Platform, held_lease_ids: Iterable[str]
    ) -> WorkerLink:
        previous = self._links.pop(worker_id, None)
        if previous is not None:
            previous.close()
        link = WorkerLink(worker_id=worker_id, slots=slots, platform=platform)
        self._links[worker_id] = link
        held = set(held_lease_ids)
        for lease in [lease for lease in self._leases.values() if lease.worker_id == worker_id]:
            if lease.lease_id in held:
                lease.link = link  # resumed; its deadline stands until the next heartbeat
                if not lease.active:
                    link.send(CancelLease(lease_id=lease.lease_id))
            else:
                self._lose(lease)
        for lease_id in sorted(held - set(self._leases)):
            link.send(CancelLease(lease_id=lease_id))  # expired or unknown: stop, never publish
        self._report_workers()
        self._dispatch()
        return link

    async def disconnect_worker(self, link: WorkerLink) -> None:
        link.close()
        if self._links.get(link.worker_id) is not link:
            return
        del self._links[link.worker_id]
        self._draining.discard(link)
        for lease in self._leases.values():
            if lease.link is link:
                lease.link = None  # resumable by a reconnect until it expires
        self._report_workers()
        self._fail_unservable()

    async def heartbeat(self, link: WorkerLink, lease_ids: Iterable[str]) -> tuple[str, ...]:
        unknown: list[str] = []
        deadline = self._clock() + self._settings.lease_duration_s
        for lease_id in lease_ids:
            lease = self._leases.get(lease_id)
            if lease is None or lease.link is not link or not lease.active:
                unknown.append(lease_id)
                link.send(CancelLease(lease_id=lease_id))
            else:
                lease.expires_at = deadline
        return tuple(unknown)

    async def log(
        self, link: WorkerLink, lease_id: str, *, stream: LogStream, data: bytes, offset: int
    ) -> bool:
        lease = self._current_lease(link, lease_id)
        if lease is None:
            return False
        execution = lease.execution
        received = execution.received.get(stream, 0)
        if offset + len(data) <= received:
            return True  # a resent chunk after a reconnect
        if offset < received:
            data, offset = data[received - offset :], received
        execution.received[stream] = offset + len(data)
        chunk = LogChunk(stream=stream, data=data, offset=offset)
        execution.log.append(chunk)
        execution.log_bytes += len(data)
        while execution.log_bytes > self._settings.log_retention_bytes and execution.log:
            execution.log_bytes -= len(execution.log.popleft().data)
        for subscription in execution.subscriptions:
            subscription.push(chunk)
        return True

    async def result(self, link: WorkerLink, lease_id: str, result: WorkResult) -> bool:
        lease = self._current_lease(link, lease_id)
        if lease is None:
            return False  # expired, cancelled or superseded: never a second completion
        execution = lease.execution
        self._drop_lease(lease)
        update: Completed | Failed
        if result.failure_message:
            update = Failed(reason=FailureReason.WORKER_ERROR, message=result.failure_message)
            outcome = FailureReason.WORKER_ERROR.value
        else:
            update = Completed(
                exit_code=result.exit_code,
                manifest_json=result.manifest_json if result.exit_code == 0 else None,
                duration_ms=result.duration_ms,
                timed_out=result.timed_out,
            )
            outcome = (
                "timed-out" if result.timed_out else "success" if result.exit_code == 0 else "exit"
            )
        self._finish(execution, update, outcome=outcome)
        self._dispatch()
        self._report_workers()  # the slot is free again
        return True

    async def release(
        self, link: WorkerLink, lease_id: str, *, reason: ReleaseReason, message: str = ""
    ) -> bool:
        lease = self._leases.get(lease_id)
        if lease is None or lease.link is not link:
            return False
        execution = lease.execution
        was_active = lease.active
        self._drop_lease(lease)
        if was_active:
            if reason is ReleaseReason.REJECTED:
                text = f"worker {link.worker_id} rejected the action"
                failed = Failed(
                    reason=FailureReason.REJECTED, message=f"{text}: {message}" if message else text
                )
                self._finish(execution, failed, outcome=FailureReason.REJECTED.value)
            elif reason is ReleaseReason.DRAINING:
                self._draining.add(link)  # SIGTERM: no new leases on this session
                self._requeue(execution)
            else:
                execution.losses += 1
                self._requeue_or_fail(execution)
        self._dispatch()
        self._report_workers()  # the slot is free again
        return True

    async def expire_due(self) -> int:
        now = self._clock()
        due = [lease for lease in self._leases.values() if lease.expires_at <= now]
        for lease in due:
            self._observer.lease_expired(pool=str(lease.execution.pool))
            link = lease.link
            if link is not None:
                # A connected worker that let a lease expire is frozen or partitioned: its
                # session ends (the servicer closes the stream; it may reconnect and resume
                # what it still holds), so it is not leased the same action again.
                link.send(CancelLease(lease_id=lease.lease_id))
                await self.disconnect_worker(link)
            if lease.active:
                self._lose(lease)
            else:
                self._drop_lease(lease)
        if due:
            self._report_workers()
            self._dispatch()
        return len(due)

    async def pools(self) -> tuple[PoolStatus, ...]:
        by_platform: dict[Platform, list[WorkerLink]] = {}
        for link in self._links.values():
            by_platform.setdefault(link.platform, []).append(link)
        return tuple(
            PoolStatus(
                platform=platform,
                workers=len(links),
                slots=sum(link.slots for link in links),
                free_slots=sum(self._free_slots(link) for link in links),
            )
            for platform, links in sorted(by_platform.items(), key=lambda item: str(item[0]))
        )

    async def leased_to(self, namespace: str, key: Digest) -> frozenset[str]:
        return frozenset(
            lease.worker_id
            for lease in self._leases.values()
            if lease.active
            and lease.execution.action.namespace == namespace
            and lease.execution.action.key == key
        )

    async def run_expiry(self, *, interval_s: float | None = None) -> None:
        """Expire due leases forever (the service runs this as a task; cancel to stop)."""
        interval = interval_s or self._settings.lease_duration_s / 10
        while True:
            await asyncio.sleep(interval)
            await self.expire_due()

    # --- internals ----------------------------------------------------------------------------

    def _subscribe(self, execution: _Execution, submitter: str) -> Subscription:
        subscription = Subscription(
            execution_id=execution.execution_id,
            namespace=execution.action.namespace,
            submitter=submitter,
        )
        execution.waiters.add(submitter)
        execution.subscriptions.append(subscription)
        if execution.state is not None:
            subscription.push(execution.state)
        for chunk in execution.log:
            subscription.push(chunk)
        return subscription

    def _broadcast(self, execution: _Execution, update: ExecutionUpdate) -> None:
        for subscription in execution.subscriptions:
            subscription.push(update)

    def _enqueue(self, execution: _Execution, *, front: bool = False) -> None:
        pool = self._pools.get(execution.pool)
        if pool is None:
            pool = self._pools[execution.pool] = _Pool(execution.pool)
        pool.push(execution, front=front)
        self._after_pool_change(execution.pool)

    def _after_pool_change(self, platform: Platform) -> None:
        pool = self._pools[platform]
        self._observer.queue_depth(pool=str(platform), depth=pool.depth)
        for position, execution in enumerate(pool.in_dispatch_order()):
            if execution.position != position:
                execution.position = position
                execution.state = Queued(execution_id=execution.execution_id, position=position)
                self._broadcast(execution, execution.state)

    def _free_slots(self, link: WorkerLink) -> int:
        used = sum(1 for lease in self._leases.values() if lease.link is link)
        return link.slots - used

    def _dispatch(self) -> None:
        """Lease queued executions to free slots: each pass gives at most one lease to each
        worker (most free slots first), so work spreads over workers."""
        changed: set[Platform] = set()
        while True:
            free = [
                (link, self._free_slots(link))
                for link in self._links.values()
                if link not in self._draining
            ]
            candidates = sorted(
                ((link, slots) for link, slots in free if slots > 0), key=lambda item: -item[1]
            )
            granted = False
            for link, _ in candidates:
                execution = self._best_for(link)
                if execution is None:
                    continue
                self._pools[execution.pool].pop_head()
                changed.add(execution.pool)
                self._grant(execution, link)
                granted = True
            if not granted:
                break
        for platform in changed:
            self._after_pool_change(platform)
        if changed:
            self._report_workers()

    def _best_for(self, link: WorkerLink) -> _Execution | None:
        best: _Execution | None = None
        for pool in self._pools.values():
            if not link.platform.satisfies(pool.platform):
                continue
            head = pool.head()
            if head is None:
                continue
            if best is None or (-head.action.priority_ms, head.seq) < (
                -best.action.priority_ms,
                best.seq,
            ):
                best = head
        return best

    def _grant(self, execution: _Execution, link: WorkerLink) -> None:
        now = self._clock()
        self._observer.queue_wait(pool=str(execution.pool), seconds=now - execution.enqueued_at)
        lease = _Lease(
            lease_id=self._new_id(),
            execution=execution,
            link=link,
            worker_id=link.worker_id,
            expires_at=now + self._settings.lease_duration_s,
        )
        self._leases[lease.lease_id] = lease
        execution.lease = lease
        execution.attempts += 1
        execution.position = -1
        execution.log.clear()
        execution.log_bytes = 0
        execution.received.clear()
        execution.state = Leased(worker_id=link.worker_id, attempt=execution.attempts)
        self._broadcast(execution, execution.state)
        link.send(
            LeaseGrant(
                lease_id=lease.lease_id,
                execution_id=execution.execution_id,
                action=execution.action,
                lease_duration_ms=round(self._settings.lease_duration_s * 1000),
            )
        )

    def _current_lease(self, link: WorkerLink, lease_id: str) -> _Lease | None:
        lease = self._leases.get(lease_id)
        if lease is None or lease.link is not link or not lease.active:
            return None
        return lease

    def _drop_lease(self, lease: _Lease) -> None:
        self._leases.pop(lease.lease_id, None)
        if lease.execution.lease is lease:
            lease.execution.lease = None
        lease.active = False

    def _lose(self, lease: _Lease) -> None:
        """The lease's worker is gone (expiry, or it reconnected without it)."""
        execution = lease.execution
        self._drop_lease(lease)
        execution.losses += 1
        self._requeue_or_fail(execution)

    def _requeue_or_fail(self, execution: _Execution) -> None:
        if execution.losses > self._settings.retry_limit:
            failed = Failed(
                reason=FailureReason.RETRIES_EXHAUSTED,
                message=(
                    f"the action was lost {execution.losses} times (worker died or was "
                    f"partitioned); retry limit {self._settings.retry_limit}"
                ),
            )
            self._finish(execution, failed, outcome=FailureReason.RETRIES_EXHAUSTED.value)
        else:
            self._requeue(execution)

    def _requeue(self, execution: _Execution) -> None:
        execution.enqueued_at = self._clock()
        self._enqueue(execution, front=True)  # it already waited its turn
        self._fail_unservable()

    def _fail_unservable(self) -> None:
        """RX-001 ``auto``: queued executions nobody waits a worker for, and no live worker
        can take, fail at once."""
        for pool in list(self._pools.values()):
            if any(link.platform.satisfies(pool.platform) for link in self._links.values()):
                continue
            for execution in pool.in_dispatch_order():
                if not execution.wait_for_worker:
                    pool.remove(execution)
                    self._finish(
                        execution,
                        _no_worker(pool.platform),
                        outcome=FailureReason.NO_WORKER_FOR_PLATFORM.value,
                    )
            self._after_pool_change(pool.platform)

    def _finish(
        self, execution: _Execution, update: Completed | Failed | None, *, outcome: str
    ) -> None:
        execution.done = True
        if update is not None:
            self._broadcast(execution, update)
        execution.subscriptions.clear()
        self._executions.pop(execution.execution_id, None)
        key = (execution.action.namespace, execution.action.key.raw)
        if self._in_flight.get(key) is execution:
            del self._in_flight[key]
        self._observer.execution_finished(pool=str(execution.pool), outcome=outcome)

    def _report_workers(self) -> None:
        by_platform: dict[Platform, list[WorkerLink]] = {}
        for link in self._links.values():
            by_platform.setdefault(link.platform, []).append(link)
        for platform, links in by_platform.items():
            self._observer.workers(
                pool=str(platform),
                workers=len(links),
                free_slots=sum(self._free_slots(link) for link in links),
            )
        for platform in self._reported - set(by_platform):  # its last worker left
            self._observer.workers(pool=str(platform), workers=0, free_slots=0)
        self._reported = set(by_platform)


def _no_worker(platform: Platform) -> Failed:
    shown = str(platform) or "(no properties)"
    return Failed(
        reason=FailureReason.NO_WORKER_FOR_PLATFORM,
        message=f"no connected worker has the platform {shown}",
    )
