"""The in-process execution queue, driven with a fake clock and hand-made worker links (RX-003,
RX-006, RX-007)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Coroutine
from typing import Any

from cache_service.scheduling import (
    CancelLease,
    Cancelled,
    Completed,
    Failed,
    FailureReason,
    InProcessExecutionQueue,
    Leased,
    LeaseGrant,
    LogChunk,
    LogStream,
    Queued,
    ReleaseReason,
    SchedulingSettings,
    WorkerLink,
    WorkResult,
)
from hazremote.domain.digest import Digest
from hazremote.domain.model import CommandAction, HashName
from hazremote.remote.action import Platform, RemoteAction

LINUX = Platform.of({"os": "linux"})
LARGE = Platform.of({"os": "linux", "pool": "large"})


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class RecordingObserver:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def queue_depth(self, *, pool: str, depth: int) -> None:
        self.events.append(("depth", {"pool": pool, "depth": depth}))

    def queue_wait(self, *, pool: str, seconds: float) -> None:
        self.events.append(("wait", {"pool": pool, "seconds": seconds}))

    def execution_finished(self, *, pool: str, outcome: str) -> None:
        self.events.append(("finished", {"pool": pool, "outcome": outcome}))

    def lease_expired(self, *, pool: str) -> None:
        self.events.append(("expired", {"pool": pool}))

    def workers(self, *, pool: str, workers: int, free_slots: int) -> None:
        self.events.append(("workers", {"pool": pool, "workers": workers, "free": free_slots}))

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [fields for name, fields in self.events if name == kind]


_keys = itertools.count(1)


def action(
    *, priority: int = 0, platform: Platform = LINUX, key: int | None = None, ns: str = "main"
) -> RemoteAction:
    number = next(_keys) if key is None else key
    return RemoteAction(
        task=f"p:t{number}",
        namespace=ns,
        hash_name=HashName.BLAKE3,
        key=Digest(number.to_bytes(32, "big")),
        key_components_json=b"{}",
        command=CommandAction(argv=("echo", str(number))),
        platform=platform,
        priority_ms=priority,
    )


def make(
    *, retry_limit: int = 2, log_retention: int = 1 << 20
) -> tuple[InProcessExecutionQueue, FakeClock, RecordingObserver]:
    clock = FakeClock()
    observer = RecordingObserver()
    ids = itertools.count(1)
    queue = InProcessExecutionQueue(
        settings=SchedulingSettings(
            lease_duration_s=30, retry_limit=retry_limit, log_retention_bytes=log_retention
        ),
        clock=clock,
        new_id=lambda: f"id{next(ids)}",
        observer=observer,
    )
    return queue, clock, observer


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(scenario())


def grants(link: WorkerLink) -> list[LeaseGrant]:
    return [m for m in link.pending() if isinstance(m, LeaseGrant)]


def tasks_of(link: WorkerLink) -> list[str]:
    return [g.action.task for g in grants(link)]


async def worker(
    queue: InProcessExecutionQueue,
    name: str,
    *,
    slots: int = 1,
    platform: Platform = LINUX,
    held: tuple[str, ...] = (),
) -> WorkerLink:
    return await queue.connect_worker(
        worker_id=name, slots=slots, platform=platform, held_lease_ids=held
    )


OK = WorkResult(exit_code=0, manifest_json=b'{"m":1}', duration_ms=5)


def test_a_worker_takes_only_actions_whose_platform_is_a_subset_of_its_own() -> None:
    async def scenario() -> None:
        queue, _, _ = make()
        large_job = action(platform=LARGE)
        plain_job = action(platform=LINUX)
        await queue.submit(large_job, submitter="a", wait_for_worker=True)
        await queue.submit(plain_job, submitter="a", wait_for_worker=True)
        small = await worker(queue, "small", slots=4, platform=LINUX)
        assert tasks_of(small) == [plain_job.task]
        big = await worker(
            queue, "big", slots=4, platform=Platform.of({**dict(LARGE.properties), "gpu": "1"})
        )
        assert tasks_of(big) == [large_job.task]

    run(scenario)


async def drain_order(queue: InProcessExecutionQueue, link: WorkerLink, count: int) -> list[str]:
    """Finish leases one at a time on a one-slot worker; the tasks in the order leased."""
    order: list[str] = []
    for _ in range(count):
        (grant,) = grants(link)
        order.append(grant.action.task)
        assert await queue.result(link, grant.lease_id, OK)
    return order


def test_higher_priority_first_then_fifo_within_a_priority() -> None:
    async def scenario() -> None:
        queue, _, _ = make()
        low, high1, high2, mid = (action(priority=p) for p in (10, 500, 500, 100))
        for job in (low, high1, high2, mid):
            await queue.submit(job, submitter="a", wait_for_worker=True)
        link = await worker(queue, "w", slots=1)
        assert await drain_order(queue, link, 4) == [high1.task, high2.task, mid.task, low.task]

    run(scenario)


def test_submitters_of_equal_priority_take_turns() -> None:
    async def scenario() -> None:
        queue, _, _ = make()
        a_jobs = [action() for _ in range(3)]
        b_jobs = [action() for _ in range(2)]
        for job in a_jobs:
            await queue.submit(job, submitter="alice", wait_for_worker=True)
        for job in b_jobs:
            await queue.submit(job, submitter="bob", wait_for_worker=True)
        link = await worker(queue, "w", slots=1)
        order = await drain_order(queue, link, 5)
        expected = [a_jobs[0], b_jobs[0], a_jobs[1], b_jobs[1], a_jobs[2]]
        assert order == [j.task for j in expected]

    run(scenario)


def test_queue_positions_are_reported_and_updated_as_the_queue_drains() -> None:
    async def scenario() -> None:
        queue, _, observer = make()
        first = await queue.submit(action(), submitter="a", wait_for_worker=True)
        second = await queue.submit(action(), submitter="a", wait_for_worker=True)
        assert first.pending() == [Queued(execution_id=first.execution_id, position=0)]
        assert second.pending() == [Queued(execution_id=second.execution_id, position=1)]
        link = await worker(queue, "w", slots=1)
        assert first.pending() == [Leased(worker_id="w", attempt=1)]
        assert second.pending() == [Queued(execution_id=second.execution_id, position=0)]
        assert observer.of("depth")[-1] == {"pool": "os=linux", "depth": 1}
        assert link.pending()  # the grant

    run(scenario)


def test_leases_spread_over_workers_and_respect_slots() -> None:
    async def scenario() -> None:
        queue, _, observer = make()
        w1 = await worker(queue, "w1", slots=2)
        w2 = await worker(queue, "w2", slots=2)
        for _ in range(5):
            await queue.submit(action(), submitter="a", wait_for_worker=True)
        assert (len(grants(w1)), len(grants(w2))) == (2, 2)
        (pool,) = await queue.pools()
        assert (pool.platform, pool.workers, pool.slots, pool.free_slots) == (LINUX, 2, 4, 0)
        assert observer.of("workers")[-1] == {"pool": "os=linux", "workers": 2, "free": 0}

    run(scenario)


def test_a_completed_execution_reaches_its_submitter_with_the_manifest() -> None:
    async def scenario() -> None:
        queue, clock, observer = make()
        sub = await queue.submit(action(), submitter="a", wait_for_worker=True)
        clock.now += 2
        link = await worker(queue, "w")
        (grant,) = grants(link)
        assert await queue.log(
            link, grant.lease_id, stream=LogStream.STDOUT, data=b"hi\n", offset=0
        )
        assert await queue.result(link, grant.lease_id, OK)
        updates = [u async for u in sub]
        assert updates[1:] == [
            Leased(worker_id="w", attempt=1),
            LogChunk(stream=LogStream.STDOUT, data=b"hi\n", offset=0),
            Completed(exit_code=0, manifest_json=b'{"m":1}', duration_ms=5),
        ]
        assert observer.of("wait") == [{"pool": "os=linux", "seconds": 2.0}]
        assert observer.of("finished") == [{"pool": "os=linux", "outcome": "success"}]

    run(scenario)


def test_a_non_zero_exit_completes_without_a_manifest() -> None:
    async def scenario() -> None:
        queue, _, observer = make()
        sub = await queue.submit(action(), submitter="a", wait_for_worker=True)
        link = await worker(queue, "w")
        (grant,) = grants(link)
        await queue.result(link, grant.lease_id, WorkResult(exit_code=3, manifest_json=b"x"))
        assert sub.pending()[-1] == Completed(exit_code=3, manifest_json=None, duration_ms=0)
        assert observer.of("finished")[-1]["outcome"] == "exit"

    run(scenario)


def test_an_expired_lease_is_requeued_and_leased_again() -> None:
    async def scenario() -> None:
        queue, clock, observer = make()
        sub = await queue.submit(action(), submitter="a", wait_for_worker=True)
        dead = await worker(queue, "dead")
        (first,) = grants(dead)
        clock.now += 29
        assert await queue.expire_due() == 0
        clock.now += 1
        assert await queue.expire_due() == 1
        assert dead.pending() == [CancelLease(lease_id=first.lease_id)]
        assert observer.of("expired") == [{"pool": "os=linux"}]
        alive = await worker(queue, "alive")
        (second,) = grants(alive)
        assert second.execution_id == first.execution_id
        assert second.lease_id != first.lease_id
        assert Leased(worker_id="alive", attempt=2) in sub.pending()

    run(scenario)


def test_heartbeats_keep_a_lease_alive() -> None:
    async def scenario() -> None:
        queue, clock, _ = make()
        await queue.submit(action(), submitter="a", wait_for_worker=True)
        link = await worker(queue, "w")
        (grant,) = grants(link)
        for _ in range(5):
            clock.now += 20
            assert await queue.heartbeat(link, [grant.lease_id]) == ()
            assert await queue.expire_due() == 0
        assert await queue.result(link, grant.lease_id, OK)

    run(scenario)


def test_a_heartbeat_for_a_lease_the_worker_does_not_hold_is_answered_with_cancel() -> None:
    async def scenario() -> None:
        queue, _, _ = make()
        link = await worker(queue, "w")
        assert await queue.heartbeat(link, ["nope"]) == ("nope",)
        assert link.pending() == [CancelLease(lease_id="nope")]

    run(scenario)


def test_after_the_retry_limit_the_execution_fails_with_the_reason() -> None:
    async def scenario() -> None:
        queue, clock, observer = make(retry_limit=1)
        sub = await queue.submit(action(), submitter="a", wait_for_worker=True)
        for _ in range(2):
            link = await worker(queue, "w", slots=1)  # reconnects after each expiry
            assert len(grants(link)) == 1
            clock.now += 31
            await queue.expire_due()
            assert link.closed  # a worker that let a lease expire loses its session
        link = await worker(queue, "w", slots=1)
        assert grants(link) == []
        last = sub.pending()[-1]
        assert isinstance(last, Failed)
        assert last.reason is FailureReason.RETRIES_EXHAUSTED
        assert "lost 2 times" in last.message
        assert "retry limit 1" in last.message
        assert observer.of("finished")[-1]["outcome"] == "retries-exhausted"

    run(scenario)


def test_a_late_result_of_an_expired_lease_is_refused_and_never_completes_twice() -> None:
    async def scenario() -> None:
        queue, clock, _ = make()
        sub = await queue.submit(action(), submitter="a", wait_for_worker=True)
        frozen = await worker(queue, "frozen")
        (old,) = grants(frozen)
        clock.now += 31
        await queue.expire_due()
        other = await worker(queue, "other")
        (new,) = grants(other)
        assert await queue.result(other, new.lease_id, OK)
        # SIGCONT: the frozen worker wakes and reports
        assert not await queue.log(
            frozen, old.lease_id, stream=LogStream.STDOUT, data=b"x", offset=0
        )
        assert not await queue.result(frozen, old.lease_id, OK)
        completions = [u for u in sub.pending() if isinstance(u, Completed)]
        assert len(completions) == 1

    run(scenario)


def test_identical_in_flight_actions_execute_once_and_both_submitters_see_the_updates() -> None:
    async def scenario() -> None:
        queue, _, _ = make()
        job = action()
        first = await queue.submit(job, submitter="a", wait_for_worker=True)
        link = await worker(queue, "w", slots=4)
        (grant,) = grants(link)
        await queue.log(link, grant.lease_id, stream=LogStream.STDERR, data=b"early", offset=0)
        second = await queue.submit(job, submitter="b", wait_for_worker=True)
        assert second.execution_id == first.execution_id
        assert grants(link) == []  # not leased a second time
        await queue.log(link, grant.lease_id, stream=LogStream.STDERR, data=b"late", offset=5)
        await queue.result(link, grant.lease_id, OK)
        late_view = second.pending()
        assert late_view == [
            Leased(worker_id="w", attempt=1),
            LogChunk(stream=LogStream.STDERR, data=b"early", offset=0),
            LogChunk(stream=LogStream.STDERR, data=b"late", offset=5),
            Completed(exit_code=0, manifest_json=b'{"m":1}', duration_ms=5),
        ]
        assert first.pending()[1:] == late_view
        # finished: the same action again is a new execution
        third = await queue.submit(job, submitter="a", wait_for_worker=True)
        assert third.execution_id != first.execution_id

    run(scenario)


def test_the_same_key_in_another_namespace_is_another_execution() -> None:
    async def scenario() -> None:
        queue, _, _ = make()
        one = await queue.submit(action(key=7, ns="x"), submitter="a", wait_for_worker=True)
        two = await queue.submit(action(key=7, ns="y"), submitter="a", wait_for_worker=True)
        assert one.execution_id != two.execution_id

    run(scenario)


def test_a_late_attacher_gets_only_the_retained_log_tail() -> None:
    async def scenario() -> None:
        queue, _, _ = make(log_retention=10)
        job = action()
        await queue.submit(job, submitter="a", wait_for_worker=True)
        link = await worker(queue, "w")
        (grant,) = grants(link)
        for index in range(4):
            await queue.log(
                link, grant.lease_id, stream=LogStream.STDOUT, data=b"abcd", offset=4 * index
            )
        late = await queue.submit(job, submitter="b", wait_for_worker=True)
        chunks = [u for u in late.pending() if isinstance(u, LogChunk)]
        assert [(c.offset, c.data) for c in chunks] == [(8, b"abcd"), (12, b"abcd")]

    run(scenario)


def test_a_resent_log_chunk_is_trimmed_to_what_was_not_yet_received() -> None:
    async def scenario() -> None:
        queue, _, _ = make()
        sub = await queue.submit(action(), submitter="a", wait_for_worker=True)
        link = await worker(queue, "w")
        (grant,) = grants(link)
        await queue.log(link, grant.lease_id, stream=LogStream.STDOUT, data=b"abc", offset=0)
        await queue.log(link, grant.lease_id, stream=LogStream.STDOUT, data=b"abc", offset=0)
        await queue.log(link, grant.lease_id, stream=LogStream.STDOUT, data=b"bcde", offset=1)
        chunks = [u for u in sub.pending() if isinstance(u, LogChunk)]
        assert [(c.offset, c.data) for c in chunks] == [(0, b"abc"), (3, b"de")]

    run(scenario)


def test_cancel_by_the_only_waiter_reaches_the_worker() -> None:
    async def scenario() -> None:
        queue, _, observer = make()
        sub = await queue.submit(action(), submitter="a", wait_for_worker=True)
        link = await worker(queue, "w")
        (grant,) = grants(link)
        assert await queue.cancel(sub.execution_id, submitter="a") is True
        assert link.pending() == [CancelLease(lease_id=grant.lease_id)]
        assert sub.pending()[-1] == Cancelled(execution_cancelled=True)
        assert observer.of("finished")[-1]["outcome"] == "cancelled"
        # the cancelled lease still holds the slot until the worker releases it
        await queue.submit(action(), submitter="a", wait_for_worker=True)
        assert grants(link) == []
        assert not await queue.result(link, grant.lease_id, OK)
        assert await queue.release(link, grant.lease_id, reason=ReleaseReason.CANCELLED)
        assert len(grants(link)) == 1

    run(scenario)


def test_cancel_is_ignored_for_the_execution_while_another_submitter_waits() -> None:
    async def scenario() -> None:
        queue, _, _ = make()
        job = action()
        mine = await queue.submit(job, submitter="a", wait_for_worker=True)
        theirs = await queue.submit(job, submitter="b", wait_for_worker=True)
        link = await worker(queue, "w")
        (grant,) = grants(link)
        assert await queue.cancel(mine.execution_id, submitter="a") is False
        assert mine.pending()[-1] == Cancelled(execution_cancelled=False)
        assert link.pending() == []  # the worker runs on
        await queue.result(link, grant.lease_id, OK)
        assert isinstance(theirs.pending()[-1], Completed)

    run(scenario)


def test_cancelling_a_queued_execution_removes_it_from_the_queue() -> None:
    async def scenario() -> None:
        queue, _, _ = make()
        doomed = await queue.submit(action(), submitter="a", wait_for_worker=True)
        kept = await queue.submit(action(), submitter="a", wait_for_worker=True)
        assert await queue.cancel(doomed.execution_id, submitter="a") is True
        assert kept.pending()[-1] == Queued(execution_id=kept.execution_id, position=0)
        link = await worker(queue, "w", slots=2)
        assert [g.execution_id for g in grants(link)] == [kept.execution_id]
        assert await queue.cancel("unknown", submitter="a") is None
        assert await queue.cancel(kept.execution_id, submitter="stranger") is False

    run(scenario)


def test_a_disconnected_worker_returns_its_leases_when_they_expire() -> None:
    async def scenario() -> None:
        queue, clock, _ = make()
        sub = await queue.submit(action(), submitter="a", wait_for_worker=True)
        gone = await worker(queue, "gone")
        (grant,) = grants(gone)
        await queue.disconnect_worker(gone)
        other = await worker(queue, "other")
        assert grants(other) == []  # resumable until the lease expires
        clock.now += 31
        await queue.expire_due()
        (again,) = grants(other)
        assert again.execution_id == grant.execution_id
        assert Leased(worker_id="other", attempt=2) in sub.pending()

    run(scenario)


def test_a_reconnecting_worker_resumes_the_leases_it_still_holds() -> None:
    async def scenario() -> None:
        queue, clock, _ = make()
        kept_sub = await queue.submit(action(), submitter="a", wait_for_worker=True)
        lost_sub = await queue.submit(action(), submitter="a", wait_for_worker=True)
        first = await worker(queue, "w", slots=2)
        kept, lost = grants(first)
        await queue.disconnect_worker(first)
        clock.now += 10
        second = await worker(queue, "w", slots=2, held=(kept.lease_id, "stale"))
        messages = second.pending()
        assert CancelLease(lease_id="stale") in messages
        regrant = [m for m in messages if isinstance(m, LeaseGrant)]
        assert [g.execution_id for g in regrant] == [lost.execution_id]  # not held: requeued
        assert await queue.heartbeat(second, [kept.lease_id]) == ()
        assert not await queue.result(first, kept.lease_id, OK)  # the old session is superseded
        assert await queue.result(second, kept.lease_id, OK)
        assert isinstance(kept_sub.pending()[-1], Completed)
        assert Leased(worker_id="w", attempt=2) in lost_sub.pending()

    run(scenario)


def test_a_draining_worker_hands_back_without_using_a_retry() -> None:
    async def scenario() -> None:
        queue, _, _ = make(retry_limit=0)
        sub = await queue.submit(action(), submitter="a", wait_for_worker=True)
        draining = await worker(queue, "d")
        (grant,) = grants(draining)
        assert await queue.release(draining, grant.lease_id, reason=ReleaseReason.DRAINING)
        await queue.disconnect_worker(draining)
        other = await worker(queue, "o")
        assert len(grants(other)) == 1
        assert not any(isinstance(u, Failed) for u in sub.pending())

    run(scenario)


def test_a_rejected_or_failed_action_fails_with_the_workers_message() -> None:
    async def scenario() -> None:
        queue, _, _ = make()
        rejected = await queue.submit(action(), submitter="a", wait_for_worker=True)
        broken = await queue.submit(action(), submitter="a", wait_for_worker=True)
        link = await worker(queue, "w", slots=2)
        one, two = grants(link)
        await queue.release(link, one.lease_id, reason=ReleaseReason.REJECTED, message="bad path")
        await queue.result(
            link, two.lease_id, WorkResult(exit_code=-1, failure_message="blob gone")
        )
        assert rejected.pending()[-1] == Failed(
            reason=FailureReason.REJECTED, message="worker w rejected the action: bad path"
        )
        assert broken.pending()[-1] == Failed(
            reason=FailureReason.WORKER_ERROR, message="blob gone"
        )

    run(scenario)


def test_without_waiting_no_matching_worker_fails_at_once() -> None:
    async def scenario() -> None:
        queue, _, observer = make()
        await worker(queue, "w", platform=LINUX)
        sub = await queue.submit(action(platform=LARGE), submitter="a", wait_for_worker=False)
        assert sub.pending() == [
            Failed(
                reason=FailureReason.NO_WORKER_FOR_PLATFORM,
                message="no connected worker has the platform os=linux,pool=large",
            )
        ]
        assert observer.of("finished")[-1]["outcome"] == "no-worker-for-platform"
        waiting = await queue.submit(action(platform=LARGE), submitter="a", wait_for_worker=True)
        assert waiting.pending() == [Queued(execution_id=waiting.execution_id, position=0)]

    run(scenario)


def test_a_queued_action_that_will_not_wait_fails_when_its_last_worker_leaves() -> None:
    async def scenario() -> None:
        queue, _, _ = make()
        busy = await worker(queue, "w", slots=1)
        await queue.submit(action(), submitter="a", wait_for_worker=False)
        queued = await queue.submit(action(), submitter="a", wait_for_worker=False)
        await queue.disconnect_worker(busy)
        last = queued.pending()[-1]
        assert isinstance(last, Failed)
        assert last.reason is FailureReason.NO_WORKER_FOR_PLATFORM

    run(scenario)


def test_wait_execution_reattaches_and_unknown_ids_are_none() -> None:
    async def scenario() -> None:
        queue, _, _ = make()
        sub = await queue.submit(action(), submitter="a", wait_for_worker=True)
        sub.close()  # the stream dropped
        link = await worker(queue, "w")
        (grant,) = grants(link)
        again = await queue.attach(sub.execution_id, submitter="a")
        assert again is not None
        await queue.result(link, grant.lease_id, OK)
        assert [type(u) for u in again.pending()] == [Leased, Completed]
        assert await queue.attach(sub.execution_id, submitter="a") is None  # finished
        assert await queue.attach("nope", submitter="a") is None

    run(scenario)
