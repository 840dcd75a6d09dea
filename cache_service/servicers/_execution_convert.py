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
from cache_service.servicers._convert import hash_name, key_digest
from hazremote.domain.digest import DIGEST_SIZE, HASH_IDS, Digest
from hazremote.domain.model import Action, CommandAction, ShellAction
from hazremote.remote.action import ActionInput, Platform, PredecessorOutputs, RemoteAction
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
    """Wire properties as a :class:`Platform`; a name given twice is refused."""
    values: dict[str, str] = {}
    for prop in properties:
        if not prop.name:
            raise InvalidRequestError(f"{what}: a platform property has no name")
        if prop.name in values:
            raise InvalidRequestError(f"{what}: platform property {prop.name!r} is given twice")
        values[prop.name] = prop.value
    return Platform.of(values)


def _input(message: execution_pb2.ActionInput, task: str) -> ActionInput:
    digest = message.digest
    if len(digest.hash) != DIGEST_SIZE:
        raise InvalidRequestError(
            f"task {task}: input {message.path!r} has a digest of {len(digest.hash)} bytes"
        )
    return ActionInput(
        path=message.path, digest=Digest(digest.hash), size=digest.size_bytes, mode=message.mode
    )


def _command(message: execution_pb2.Action, task: str) -> Action:
    kind = message.WhichOneof("command")
    if kind == "argv":
        return CommandAction(argv=tuple(message.argv.argv))
    if kind == "shell":
        return ShellAction(shell=message.shell.shell, script=message.shell.script)
    raise InvalidRequestError(f"task {task}: the action has no command (argv or shell)")


def remote_action(message: execution_pb2.Action) -> RemoteAction:
    """A wire action as a :class:`RemoteAction` (structure only; admission checks the rest).

    Raises:
        InvalidRequestError: a field cannot be read (unknown hash function, a key or digest
            of the wrong length, no command, a platform property twice).
    """
    task = message.task or "(unnamed)"
    try:
        hash_function = hash_name(message.hash_function)
        key = key_digest(message.key)
    except InvalidRequestError as exc:
        raise InvalidRequestError(f"task {task}: {exc}") from None
    return RemoteAction(
        task=task,
        namespace=message.namespace,
        hash_name=hash_function,
        key=key,
        key_components_json=message.key_components_json,
        command=_command(message, task),
        env=tuple((prop.name, prop.value) for prop in message.env),
        cwd=message.cwd,
        inputs=tuple(_input(item, task) for item in message.inputs),
        predecessor_outputs=tuple(
            PredecessorOutputs(task=pred.task, files=tuple(_input(f, task) for f in pred.files))
            for pred in message.predecessor_outputs
        ),
        output_patterns=tuple(message.output_patterns),
        platform=platform_of(message.platform, f"task {task}"),
        timeout_ms=message.timeout_ms,
        grace_period_ms=message.grace_period_ms,
        priority_ms=message.priority_ms,
    )


def _input_message(item: ActionInput) -> execution_pb2.ActionInput:
    return execution_pb2.ActionInput(
        path=item.path,
        digest=digest_pb2.Digest(hash=item.digest.raw, size_bytes=item.size),
        mode=item.mode,
    )


def _properties(pairs: Iterable[tuple[str, str]]) -> list[digest_pb2.Property]:
    return [digest_pb2.Property(name=name, value=value) for name, value in pairs]


def action_message(action: RemoteAction) -> execution_pb2.Action:
    """The wire form of ``action`` (what a worker's lease carries)."""
    message = execution_pb2.Action(
        task=action.task,
        namespace=action.namespace,
        hash_function=HASH_IDS[action.hash_name],  # type: ignore[arg-type]
        key=action.key.raw,
        key_components_json=action.key_components_json,
        env=_properties(action.env),
        cwd=action.cwd,
        inputs=[_input_message(item) for item in action.inputs],
        predecessor_outputs=[
            execution_pb2.PredecessorOutputs(
                task=pred.task, files=[_input_message(f) for f in pred.files]
            )
            for pred in action.predecessor_outputs
        ],
        output_patterns=list(action.output_patterns),
        platform=_properties(action.platform.properties),
        timeout_ms=action.timeout_ms,
        grace_period_ms=action.grace_period_ms,
        priority_ms=action.priority_ms,
    )
    command = action.command
    if isinstance(command, CommandAction):
        message.argv.argv.extend(command.argv)
    else:
        message.shell.shell = command.shell
        message.shell.script = command.script
    return message


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
            platform=_properties(pool.platform.properties),
            workers=pool.workers,
            slots=pool.slots,
            free_slots=pool.free_slots,
        )
        for pool in pools
    ]
