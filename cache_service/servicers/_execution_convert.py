"""Conversions between the execution wire messages and the scheduling values, at the edge.

Spec coverage:
* RX-002 — a wire ``Action`` becomes a :class:`RemoteAction` (malformed fields:
  :class:`InvalidRequestError` naming the task), and back for a worker's lease.
* RX-003 — worker messages become queue calls' values; leases and cancels become
  ``ServerMessage``.
* RX-005..007 — scheduling updates become ``ExecutionUpdate`` messages.
Out of scope: whether an action is acceptable (``cache_service.scheduling.admission``).
"""

from __future__ import annotations

from collections.abc import Iterable

from cache_service.errors import InvalidRequestError
from cache_service.scheduling import (
    CancelLease,
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
    ServerMessage,
    WorkResult,
)
from hazremote.remote.action import Platform, RemoteAction
from hazremote.remote.action_wire import (
    ActionWireError,
    action_from_wire,
    action_to_wire,
    platform_from_wire,
)
from hazremote.wire.haz.remote.v1 import cache_pb2, digest_pb2, execution_pb2

__all__ = [
    "action_message",
    "execution_pools",
    "log_stream",
    "platform_of",
    "queued_message",
    "release_reason",
    "remote_action",
    "server_message",
    "update_message",
    "welcome_message",
    "work_result",
]

_STREAMS: dict[int, LogStream] = {
    execution_pb2.LOG_STREAM_STDOUT: LogStream.STDOUT,
    execution_pb2.LOG_STREAM_STDERR: LogStream.STDERR,
}
_WIRE_STREAMS: dict[LogStream, execution_pb2.LogStream] = {
    LogStream.STDOUT: execution_pb2.LOG_STREAM_STDOUT,
    LogStream.STDERR: execution_pb2.LOG_STREAM_STDERR,
}
_REASONS: dict[FailureReason, execution_pb2.FailureReason] = {
    FailureReason.NO_WORKER_FOR_PLATFORM: execution_pb2.FAILURE_REASON_NO_WORKER_FOR_PLATFORM,
    FailureReason.RETRIES_EXHAUSTED: execution_pb2.FAILURE_REASON_RETRIES_EXHAUSTED,
    FailureReason.REJECTED: execution_pb2.FAILURE_REASON_REJECTED,
    FailureReason.WORKER_ERROR: execution_pb2.FAILURE_REASON_WORKER_ERROR,
}
_RELEASES: dict[int, ReleaseReason] = {
    execution_pb2.RELEASE_REASON_DRAINING: ReleaseReason.DRAINING,
    execution_pb2.RELEASE_REASON_REJECTED: ReleaseReason.REJECTED,
    execution_pb2.RELEASE_REASON_CANCELLED: ReleaseReason.CANCELLED,
}


# -- the action -------------------------------------------------------------------------------


def platform_of(properties: Iterable[digest_pb2.Property], what: str) -> Platform:
    """Wire properties as a :class:`Platform` (:func:`platform_from_wire`).

    Raises:
        InvalidRequestError: a property without a name or given twice.
    """
    try:
        return platform_from_wire(properties, what)
    except ActionWireError as exc:
        raise InvalidRequestError(str(exc)) from None


def remote_action(message: execution_pb2.Action) -> RemoteAction:
    """A wire action as a :class:`RemoteAction` (:func:`action_from_wire`).

    Raises:
        InvalidRequestError: a field cannot be read, naming the task.
    """
    try:
        return action_from_wire(message)
    except ActionWireError as exc:
        raise InvalidRequestError(str(exc)) from None


#: What a worker's lease carries.
action_message = action_to_wire


# -- client updates ---------------------------------------------------------------------------


def queued_message(execution_id: str, position: int) -> execution_pb2.ExecutionUpdate:
    return execution_pb2.ExecutionUpdate(
        queued=execution_pb2.ExecutionUpdate.Queued(execution_id=execution_id, position=position)
    )


def update_message(update: ExecutionUpdate) -> execution_pb2.ExecutionUpdate:
    """The wire form of one scheduling update."""
    wire = execution_pb2.ExecutionUpdate
    if isinstance(update, Queued):
        return queued_message(update.execution_id, update.position)
    if isinstance(update, Leased):
        return wire(leased=wire.Leased(worker_id=update.worker_id, attempt=update.attempt))
    if isinstance(update, LogChunk):
        return wire(
            log=wire.LogChunk(
                stream=_WIRE_STREAMS[update.stream], data=update.data, offset=update.offset
            )
        )
    if isinstance(update, Completed):
        return wire(
            completed=wire.Completed(
                exit_code=update.exit_code,
                manifest_json=update.manifest_json or b"",
                duration_ms=update.duration_ms,
                timed_out=update.timed_out,
            )
        )
    if isinstance(update, Failed):
        return wire(failed=wire.Failed(reason=_REASONS[update.reason], message=update.message))
    return wire(cancelled=wire.Cancelled(execution_cancelled=update.execution_cancelled))


# -- workers ----------------------------------------------------------------------------------


def log_stream(value: int) -> LogStream:
    stream = _STREAMS.get(value)
    if stream is None:
        raise InvalidRequestError(f"unknown log stream {value}")
    return stream


def release_reason(value: int) -> ReleaseReason:
    reason = _RELEASES.get(value)
    if reason is None:
        raise InvalidRequestError(f"unknown release reason {value}")
    return reason


def work_result(message: execution_pb2.WorkerMessage.Result) -> WorkResult:
    return WorkResult(
        exit_code=message.exit_code,
        manifest_json=message.manifest_json if message.manifest_published else None,
        duration_ms=message.duration_ms,
        timed_out=message.timed_out,
        failure_message=message.failure_message,
    )


def server_message(message: ServerMessage) -> execution_pb2.ServerMessage:
    wire = execution_pb2.ServerMessage
    if isinstance(message, LeaseGrant):
        return wire(
            lease=wire.Lease(
                lease_id=message.lease_id,
                execution_id=message.execution_id,
                action=action_message(message.action),
                lease_duration_ms=message.lease_duration_ms,
            )
        )
    assert isinstance(message, CancelLease)
    return wire(cancel=wire.Cancel(lease_id=message.lease_id))


def welcome_message(heartbeat_interval_ms: int) -> execution_pb2.ServerMessage:
    wire = execution_pb2.ServerMessage
    return wire(welcome=wire.Welcome(heartbeat_interval_ms=heartbeat_interval_ms))


# -- capabilities -----------------------------------------------------------------------------


def execution_pools(pools: Iterable[PoolStatus]) -> list[cache_pb2.ExecutionPool]:
    return [
        cache_pb2.ExecutionPool(
            platform=[
                digest_pb2.Property(name=name, value=value)
                for name, value in pool.platform.properties
            ],
            workers=pool.workers,
            slots=pool.slots,
            free_slots=pool.free_slots,
        )
        for pool in pools
    ]
