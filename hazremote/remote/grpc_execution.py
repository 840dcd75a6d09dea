"""The ``Execution`` service over gRPC: :class:`GrpcExecutionClient` and the run's session.

Generated messages stay here: actions go out and updates come back as the domain values of
:mod:`.execution` (convert at the edge).

Spec coverage:
* RX-002 — the action goes out through :mod:`hazremote.remote.action_wire`.
* RX-005, RX-007 — ``Execute``/``WaitExecution`` update streams, ``CancelExecution``.
* RX-001 — :meth:`RemoteExecutionSession.free_slots`: ``--remote-jobs``' default, from
  ``GetCapabilities``' execution pools.
Out of scope: policy and fallback (:class:`~.execution.RemoteExecutor`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import grpc.aio

from hazremote.remote.action import RemoteAction
from hazremote.remote.action_wire import action_to_wire
from hazremote.remote.channel import aio_channel
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
)
from hazremote.remote.settings import RemoteConfig
from hazremote.remote.transfer import BlobTransfer
from hazremote.wire.haz.remote.v1 import (
    cache_pb2,
    cache_pb2_grpc,
    execution_pb2,
    execution_pb2_grpc,
)

__all__ = ["GrpcExecutionClient", "RemoteExecutionSession", "update_from_wire"]

_REASONS = {
    execution_pb2.FAILURE_REASON_NO_WORKER_FOR_PLATFORM: FailureReason.NO_WORKER_FOR_PLATFORM,
    execution_pb2.FAILURE_REASON_RETRIES_EXHAUSTED: FailureReason.RETRIES_EXHAUSTED,
    execution_pb2.FAILURE_REASON_REJECTED: FailureReason.REJECTED,
    execution_pb2.FAILURE_REASON_WORKER_ERROR: FailureReason.WORKER_ERROR,
}


def update_from_wire(message: Any) -> ExecutionUpdate | None:
    """The domain value of one ``ExecutionUpdate``; ``None`` for one this client does not know
    (a later version's), which it skips."""
    kind = message.WhichOneof("update")
    if kind == "queued":
        q = message.queued
        return Queued(execution_id=q.execution_id, position=q.position)
    if kind == "leased":
        return Leased(worker_id=message.leased.worker_id, attempt=message.leased.attempt)
    if kind == "log":
        log = message.log
        stream = (
            LogStream.STDERR if log.stream == execution_pb2.LOG_STREAM_STDERR else LogStream.STDOUT
        )
        return LogChunk(stream=stream, data=bytes(log.data), offset=int(log.offset))
    if kind == "completed":
        c = message.completed
        return Completed(
            exit_code=c.exit_code,
            manifest_json=bytes(c.manifest_json),
            duration_ms=int(c.duration_ms),
            timed_out=c.timed_out,
        )
    if kind == "failed":
        reason = _REASONS.get(message.failed.reason, FailureReason.UNSPECIFIED)
        return Failed(reason=reason, message=message.failed.message)
    if kind == "cancelled":
        return Cancelled(execution_cancelled=message.cancelled.execution_cancelled)
    return None


class GrpcExecutionClient:
    """Implements :class:`~.execution.ExecutionClient` on one ``grpc.aio`` channel.

    Args:
        channel: The channel to call on.
        metadata: Sent with every call (``authorization: Bearer <token>``).
        cancel_timeout_s: Deadline of ``CancelExecution``.
    """

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        metadata: tuple[tuple[str, str], ...],
        cancel_timeout_s: float,
    ) -> None:
        self._stub = execution_pb2_grpc.ExecutionStub(channel)
        self._metadata = metadata
        self._cancel_timeout_s = cancel_timeout_s

    async def _updates(self, call: Any) -> AsyncIterator[ExecutionUpdate]:
        try:
            async for message in call:
                update = update_from_wire(message)
                if update is not None:
                    yield update
        except grpc.aio.AioRpcError as error:
            raise ExecutionUnavailable(
                f"{error.code().name.lower()}: {error.details() or 'no details'}"
            ) from None
        finally:
            call.cancel()

    def execute(
        self, action: RemoteAction, *, wait_for_worker: bool
    ) -> AsyncIterator[ExecutionUpdate]:
        request = execution_pb2.ExecuteRequest(
            action=action_to_wire(action), wait_for_worker=wait_for_worker
        )
        return self._updates(self._stub.Execute(request, metadata=self._metadata))

    def wait(self, execution_id: str) -> AsyncIterator[ExecutionUpdate]:
        request = execution_pb2.WaitExecutionRequest(execution_id=execution_id)
        return self._updates(self._stub.WaitExecution(request, metadata=self._metadata))

    async def cancel(self, execution_id: str) -> bool:
        try:
            reply = await self._stub.CancelExecution(
                execution_pb2.CancelExecutionRequest(execution_id=execution_id),
                timeout=self._cancel_timeout_s,
                metadata=self._metadata,
            )
        except grpc.aio.AioRpcError as error:
            raise ExecutionUnavailable(error.details() or error.code().name) from None
        return bool(reply.execution_cancelled)


class RemoteExecutionSession:
    """The run's execution client and input uploader, on their own channel (closed by
    :meth:`close`)."""

    def __init__(self, config: RemoteConfig, *, hash_name: Any) -> None:
        self._config = config
        self._channel = aio_channel(config)
        metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {config.token}"),) if config.token else ()
        )
        self._metadata = metadata
        self._files = ThreadPoolExecutor(max_workers=2, thread_name_prefix="haz-exec-files")
        self.client = GrpcExecutionClient(
            self._channel, metadata=metadata, cancel_timeout_s=config.timeouts.connect_s
        )
        self.uploader = BlobTransfer(
            lambda: self._channel,
            hash_name=hash_name,
            namespace=config.namespace,
            metadata=metadata,
            timeouts=config.timeouts,
            files=self._files,
        )

    async def free_slots(self) -> int | None:
        """RX-001: the free worker slots the service reports; ``None`` when it says nothing
        (unreachable, or execution not offered)."""
        stub = cache_pb2_grpc.CapabilitiesStub(self._channel)
        try:
            caps = await stub.GetCapabilities(
                cache_pb2.GetCapabilitiesRequest(namespace=self._config.namespace),
                timeout=self._config.timeouts.connect_s,
                metadata=self._metadata,
            )
        except grpc.aio.AioRpcError:
            return None
        if not caps.execution_offered:
            return None
        return sum(max(0, pool.free_slots) for pool in caps.execution_pools) or None

    async def close(self) -> None:
        self.uploader.close()
        await self._channel.close(grace=None)
        self._files.shutdown(wait=True)
