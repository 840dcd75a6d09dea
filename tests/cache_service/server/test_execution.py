"""Remote execution through a real ``serve()`` on loopback: real gRPC stubs for the client,
a fake worker speaking the WorkerSession stream (RX-002/003/005/006/007, RX-001 ``auto``).

Each test uses a pool of its own, so workers of one test never take another's actions."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator

import grpc
import pytest

from cache_service.app import ExecutionOptions
from cache_service.scheduling import SchedulingSettings
from hazremote.domain.digest import digest_bytes
from hazremote.wire.haz.remote.v1 import cache_pb2, execution_pb2, execution_pb2_grpc
from tests.cache_service.server.executionkit import (
    BuiltAction,
    FakeWorker,
    H,
    build_action,
    execute,
)
from tests.cache_service.server.serverkit import ServerThread, running_server, upload


def leased_lease(worker: FakeWorker) -> execution_pb2.ServerMessage.Lease:
    message = worker.receive()
    assert message.WhichOneof("message") == "lease", message
    return message.lease


def connected(server: ServerThread, worker_id: str, pool: str, **kwargs: object) -> FakeWorker:
    worker = FakeWorker(server.channel, worker_id=worker_id, pool=pool, **kwargs)  # type: ignore[arg-type]
    welcome = worker.receive()
    assert welcome.WhichOneof("message") == "welcome"
    return worker


def uploaded(server: ServerThread, pool: str) -> BuiltAction:
    built = build_action(pool=pool)
    upload(server, *built.blobs)
    return built


def test_welcome_names_the_heartbeat_interval(server: ServerThread) -> None:
    worker = FakeWorker(server.channel, worker_id="w-welcome", pool="welcome")
    welcome = worker.receive()
    assert welcome.welcome.heartbeat_interval_ms == 10_000  # a third of the 30 s lease
    worker.close()


def test_submit_lease_logs_in_order_then_completed_with_the_manifest(
    server: ServerThread,
) -> None:
    worker = connected(server, "w-flow", "flow")
    built = uploaded(server, "flow")
    updates = execute(server.channel, built)
    queued = updates.next()
    assert queued.WhichOneof("update") == "queued"
    assert queued.queued.execution_id
    lease = leased_lease(worker)
    assert lease.execution_id == queued.queued.execution_id
    assert lease.action.key == built.action.key.raw
    assert list(lease.action.argv.argv) == ["cc", "-c", "src/a.c"]
    leased = updates.next()
    assert leased.leased.worker_id == "w-flow"
    assert leased.leased.attempt == 1
    worker.log(lease.lease_id, b"line 1\n", offset=0)
    worker.log(lease.lease_id, b"warn\n", offset=0, stderr=True)
    worker.log(lease.lease_id, b"line 2\n", offset=7)
    worker.result(lease.lease_id, b'{"manifest": 1}')
    rest = updates.kinds_until_end()
    assert [(u.log.stream, u.log.data, u.log.offset) for u in rest[:3]] == [
        (execution_pb2.LOG_STREAM_STDOUT, b"line 1\n", 0),
        (execution_pb2.LOG_STREAM_STDERR, b"warn\n", 0),
        (execution_pb2.LOG_STREAM_STDOUT, b"line 2\n", 7),
    ]
    assert len(rest) == 4
    completed = rest[3].completed
    assert (completed.exit_code, completed.manifest_json, completed.duration_ms) == (
        0,
        b'{"manifest": 1}',
        7,
    )
    worker.close()


def test_identical_actions_execute_once_and_both_submitters_complete(
    server: ServerThread,
) -> None:
    worker = connected(server, "w-dedup", "dedup", slots=2)
    built = uploaded(server, "dedup")
    first = execute(server.channel, built)
    assert first.next().WhichOneof("update") == "queued"
    lease = leased_lease(worker)
    second = execute(server.channel, built)
    attached = second.next()
    assert attached.queued.execution_id == lease.execution_id  # the id, even when leased
    assert second.next().leased.worker_id == "w-dedup"
    worker.result(lease.lease_id, b'{"once": true}')
    assert first.kinds_until_end()[-1].completed.manifest_json == b'{"once": true}'
    assert second.kinds_until_end()[-1].completed.manifest_json == b'{"once": true}'
    other = uploaded(server, "dedup")
    execute(server.channel, other).next()
    # The next lease is the other action's: the duplicate was never leased.
    assert leased_lease(worker).action.key == other.action.key.raw
    worker.close()


def test_cancel_reaches_the_worker(server: ServerThread) -> None:
    worker = connected(server, "w-cancel", "cancel")
    updates = execute(server.channel, uploaded(server, "cancel"))
    execution_id = updates.next().queued.execution_id
    lease = leased_lease(worker)
    stub = execution_pb2_grpc.ExecutionStub(server.channel)
    reply = stub.CancelExecution(
        execution_pb2.CancelExecutionRequest(execution_id=execution_id), timeout=20
    )
    assert reply.execution_cancelled
    assert worker.receive().cancel.lease_id == lease.lease_id
    assert updates.kinds_until_end()[-1].cancelled.execution_cancelled
    worker.close()


def test_wait_and_cancel_of_an_unknown_execution_are_not_found(server: ServerThread) -> None:
    stub = execution_pb2_grpc.ExecutionStub(server.channel)
    with pytest.raises(grpc.RpcError) as cancel:
        stub.CancelExecution(execution_pb2.CancelExecutionRequest(execution_id="nope"), timeout=20)
    assert cancel.value.code() is grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as wait:
        list(
            stub.WaitExecution(execution_pb2.WaitExecutionRequest(execution_id="nope"), timeout=20)
        )
    assert wait.value.code() is grpc.StatusCode.NOT_FOUND
    assert "no execution 'nope' in flight" in str(wait.value.details())


def test_wait_execution_reattaches_with_the_state_and_log_tail(server: ServerThread) -> None:
    worker = connected(server, "w-wait", "wait")
    updates = execute(server.channel, uploaded(server, "wait"))
    execution_id = updates.next().queued.execution_id
    lease = leased_lease(worker)
    worker.log(lease.lease_id, b"early\n", offset=0)
    assert updates.next().WhichOneof("update") == "leased"
    assert updates.next().log.data == b"early\n"
    stub = execution_pb2_grpc.ExecutionStub(server.channel)
    again = stub.WaitExecution(
        execution_pb2.WaitExecutionRequest(execution_id=execution_id), timeout=20
    )
    assert next(again).leased.worker_id == "w-wait"
    assert next(again).log.data == b"early\n"
    worker.result(lease.lease_id, b"{}")
    assert list(again)[-1].WhichOneof("update") == "completed"
    worker.close()


def test_a_forged_key_is_refused_before_anything_is_queued(server: ServerThread) -> None:
    worker = connected(server, "w-forged", "forged")
    built = uploaded(server, "forged")
    forged = BuiltAction(
        action=dataclasses.replace(built.action, key=digest_bytes(H, b"someone else's")),
        blobs=built.blobs,
    )
    with pytest.raises(grpc.RpcError) as info:
        execute(server.channel, forged).next()
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "task app:build: the key " in str(info.value.details())
    assert "does not match its components" in str(info.value.details())
    execute(server.channel, built).next()
    assert leased_lease(worker).action.key == built.action.key.raw  # the forged one never was
    worker.close()


def test_missing_input_blobs_are_a_failed_precondition_naming_them(server: ServerThread) -> None:
    built = build_action(pool="missing")  # its input is never uploaded
    with pytest.raises(grpc.RpcError) as info:
        execute(server.channel, built).next()
    assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    details = str(info.value.details())
    assert details.startswith("task app:build: 1 input files are not stored")
    assert "/src/a.c (" in details


def test_a_cached_key_is_answered_at_once_without_a_lease(server: ServerThread) -> None:
    worker = connected(server, "w-cached", "cached")
    built = uploaded(server, "cached")
    server.manifest_store.put_if_absent("main", H, built.action.key, b'{"cached": 1}')
    (only,) = execute(server.channel, built).kinds_until_end()
    assert only.completed.exit_code == 0
    assert only.completed.manifest_json == b'{"cached": 1}'
    other = uploaded(server, "cached")
    execute(server.channel, other).next()
    assert leased_lease(worker).action.key == other.action.key.raw
    worker.close()


def test_capabilities_show_the_pool_and_its_free_slots(server: ServerThread) -> None:
    worker = connected(server, "w-caps", "caps", slots=3)
    reply = server.capabilities().GetCapabilities(cache_pb2.GetCapabilitiesRequest(), timeout=20)
    assert reply.execution_offered
    pools = {
        tuple((p.name, p.value) for p in pool.platform): pool for pool in reply.execution_pools
    }
    caps = pools[(("pool", "caps"),)]
    assert (caps.workers, caps.slots, caps.free_slots) == (1, 3, 3)
    worker.close()


def test_no_worker_for_the_platform_fails_at_once_when_not_waiting(server: ServerThread) -> None:
    built = uploaded(server, "nobody-here")
    (only,) = execute(server.channel, built, wait_for_worker=False).kinds_until_end()
    assert only.failed.reason == execution_pb2.FAILURE_REASON_NO_WORKER_FOR_PLATFORM
    assert only.failed.message == "no connected worker has the platform pool=nobody-here"


def test_a_first_message_other_than_hello_is_invalid(server: ServerThread) -> None:
    stub = execution_pb2_grpc.WorkerSessionStub(server.channel)
    beat = execution_pb2.WorkerMessage(heartbeat=execution_pb2.WorkerMessage.Heartbeat())
    with pytest.raises(grpc.RpcError) as info:
        list(stub.Connect(iter([beat]), timeout=20))
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "must be hello" in str(info.value.details())


class FakeClock:
    """Monotonic seconds the test moves (read from the server's thread)."""

    def __init__(self) -> None:
        self._now = 1000.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds


@pytest.fixture
def clocked() -> Iterator[tuple[ServerThread, FakeClock]]:
    clock = FakeClock()
    options = ExecutionOptions(
        settings=SchedulingSettings(lease_duration_s=30.0), clock=clock, expiry_interval_s=0.02
    )
    with running_server(execution=options) as running:
        yield running, clock


def test_an_expired_lease_is_requeued_to_a_second_worker(
    clocked: tuple[ServerThread, FakeClock],
) -> None:
    server, clock = clocked
    first = connected(server, "w-first", "expiry")
    second = connected(server, "w-second", "expiry")
    updates = execute(server.channel, uploaded(server, "expiry"))
    assert updates.next().WhichOneof("update") == "queued"
    lost = leased_lease(first)
    assert updates.next().leased.worker_id == "w-first"
    clock.advance(31.0)  # no heartbeat for longer than the lease
    assert first.receive().cancel.lease_id == lost.lease_id
    assert first.ended() is None  # the frozen worker's session is ended
    retried = leased_lease(second)
    assert retried.execution_id == lost.execution_id
    assert retried.lease_id != lost.lease_id
    requeued = [updates.next() for _ in range(2)]
    assert requeued[0].WhichOneof("update") == "queued"
    assert (requeued[1].leased.worker_id, requeued[1].leased.attempt) == ("w-second", 2)
    second.result(retried.lease_id, b"{}")
    assert updates.kinds_until_end()[-1].WhichOneof("update") == "completed"
    second.close()


def test_scheduler_metrics_count_workers_slots_and_outcomes(server: ServerThread) -> None:
    worker = connected(server, "w-metrics", "metrics", slots=2)
    updates = execute(server.channel, uploaded(server, "metrics"))
    lease = leased_lease(worker)
    worker.result(lease.lease_id, b"{}")
    assert updates.kinds_until_end()[-1].WhichOneof("update") == "completed"
    registry = server.running.metrics.registry
    pool = {"pool": "pool=metrics"}
    assert registry.get_sample_value("haz_cache_workers", pool) == 1
    assert registry.get_sample_value("haz_cache_worker_free_slots", pool) == 2
    assert registry.get_sample_value("haz_cache_execution_queue_depth", pool) == 0
    assert registry.get_sample_value("haz_cache_execution_queue_wait_seconds_count", pool) == 1
    assert (
        registry.get_sample_value(
            "haz_cache_executions_total", {"pool": "pool=metrics", "outcome": "success"}
        )
        == 1
    )
    worker.close()
