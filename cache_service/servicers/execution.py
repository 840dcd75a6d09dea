"""``haz.remote.v1.Execution`` and ``haz.remote.v1.WorkerSession``: thin servicers over the
:class:`~cache_service.scheduling.ExecutionQueue`.

Spec coverage:
* RX-002 — the action is admitted (key recomputed, hostile actions refused) before anything
  else; a key with a manifest in the caller's namespace chain is answered at once with
  ``completed`` (no execution); dispatch is refused (``FAILED_PRECONDITION`` naming the
  files) until every input blob, predecessors' outputs included, is stored.
* RX-003 — one ``Connect`` stream per worker: hello → ``WorkerLink``; heartbeats, logs,
  results and releases go to the queue; leases and cancels come out; the stream's end is the
  worker's disconnect; a lease the queue expires ends the session.
* RX-005, RX-006 — updates stream from the execution's ``Subscription``; every ``Execute``
  stream of a queued execution starts with ``queued`` carrying the execution id.
* RX-007 — ``CancelExecution`` withdraws the caller's interest.
* SEC-002 — a worker id belongs to the token that connected it first (another token is
  ``PERMISSION_DENIED``); ``WaitExecution`` only in the caller's own namespaces.
Out of scope: which tokens may call (``cache_service.auth``), status codes (``_status``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from cache_service.cas import BlobService
from cache_service.errors import ExecutionNotFoundError, InvalidRequestError, MissingBlobsError
from cache_service.identity import AccessDeniedError, Identity, current_identity
from cache_service.manifests import ManifestService
from cache_service.offload import Offload
from cache_service.scheduling import Cancelled as CancelledUpdate
from cache_service.scheduling import (
    Completed,
    ExecutionQueue,
    Failed,
    Queued,
    Subscription,
    WorkerLink,
)
from cache_service.scheduling.admission import AdmissionLimits, admit
from cache_service.servicers import _execution_convert as convert
from cache_service.servicers._status import maps_errors, maps_errors_stream
from cache_service.storage.base import WOULD_BLOCK, BlobRef
from hazremote.domain.digest import Digest
from hazremote.logs import get_logger
from hazremote.remote.action import ActionInput, RemoteAction
from hazremote.wire.haz.remote.v1 import execution_pb2, execution_pb2_grpc

__all__ = ["ExecutionServicer", "WorkerSessionServicer"]

_log = get_logger("cache_service.execution")

#: How many missing input files a FAILED_PRECONDITION message names.
NAMED_MISSING = 10


def _chain(identity: Identity, namespace: str) -> tuple[str, ...]:
    grant = identity.grant
    return (namespace,) if grant is None else grant.lookup_chain(namespace)


def _files(action: RemoteAction) -> list[ActionInput]:
    return [*action.inputs, *(f for pred in action.predecessor_outputs for f in pred.files)]


class ExecutionServicer(execution_pb2_grpc.ExecutionServicer):  # type: ignore[misc]
    """Clients: submit (admit → cache answer → inputs stored → queue), follow, cancel."""

    def __init__(
        self,
        *,
        queue: ExecutionQueue,
        manifests: ManifestService,
        blobs: BlobService,
        offload: Offload,
        limits: AdmissionLimits | None = None,
    ) -> None:
        self._queue = queue
        self._manifests = manifests
        self._blobs = blobs
        self._offload = offload
        self._limits = limits

    @maps_errors_stream
    async def Execute(
        self, request: execution_pb2.ExecuteRequest, context: Any
    ) -> AsyncIterator[execution_pb2.ExecutionUpdate]:
        del context
        action = convert.remote_action(request.action)
        admit(action, limits=self._limits)
        identity = current_identity()
        cached = await self._cached(identity, action)
        if cached is not None:
            _log.info("execution answered from the cache", task=action.task, key=action.key.hex)
            yield convert.update_message(
                Completed(exit_code=0, manifest_json=cached, duration_ms=0)
            )
            return
        await self._require_inputs(action)
        subscription = await self._queue.submit(
            action, submitter=identity.name, wait_for_worker=request.wait_for_worker
        )
        _log.info(
            "execution submitted",
            task=action.task,
            key=action.key.hex,
            namespace=action.namespace,
            execution=subscription.execution_id,
            platform=str(action.platform),
        )
        first = subscription.pending()
        if not first or not isinstance(first[0], Queued | Completed | Failed | CancelledUpdate):
            # An attach to a leased execution: the client still learns the execution id.
            yield convert.queued_message(subscription.execution_id, 0)
        async for message in _follow(subscription, first):
            yield message

    @maps_errors_stream
    async def WaitExecution(
        self, request: execution_pb2.WaitExecutionRequest, context: Any
    ) -> AsyncIterator[execution_pb2.ExecutionUpdate]:
        del context
        identity = current_identity()
        subscription = await self._queue.attach(request.execution_id, submitter=identity.name)
        if subscription is None:
            raise _unknown(request.execution_id)
        grant = identity.grant
        if grant is not None and not grant.matches(subscription.namespace):
            # Undo the attach (others still wait, so the execution runs on).
            await self._queue.cancel(request.execution_id, submitter=identity.name)
            raise AccessDeniedError(
                f"token {identity.name!r} may not follow executions in namespace "
                f"{subscription.namespace!r}"
            )
        async for message in _follow(subscription, subscription.pending()):
            yield message

    @maps_errors
    async def CancelExecution(
        self, request: execution_pb2.CancelExecutionRequest, context: Any
    ) -> execution_pb2.CancelExecutionResponse:
        del context
        identity = current_identity()
        cancelled = await self._queue.cancel(request.execution_id, submitter=identity.name)
        if cancelled is None:
            raise _unknown(request.execution_id)
        _log.info("execution cancel", execution=request.execution_id, execution_cancelled=cancelled)
        return execution_pb2.CancelExecutionResponse(execution_cancelled=cancelled)

    async def _cached(self, identity: Identity, action: RemoteAction) -> bytes | None:
        chain = _chain(identity, action.namespace)
        keys = (action.key,)
        answer = self._manifests.lookup_nowait(chain, action.hash_name, keys)
        found = (
            await self._offload(self._manifests.lookup, chain, action.hash_name, keys)
            if answer is WOULD_BLOCK
            else answer
        )
        hit = found[0]
        return None if hit is None else hit[0]

    async def _require_inputs(self, action: RemoteAction) -> None:
        """RX-002: every blob the worker will materialise is stored, else
        :class:`MissingBlobsError` naming the first :data:`NAMED_MISSING` files."""
        files = _files(action)
        refs = list(
            dict.fromkeys(
                BlobRef(hash_name=action.hash_name, digest=f.digest, size=f.size) for f in files
            )
        )
        step = self._blobs.limits.max_batch_items
        missing: set[BlobRef] = set()
        for start in range(0, len(refs), step):
            batch = refs[start : start + step]
            missing.update(await self._offload(self._blobs.find_missing, batch))
        if not missing:
            return
        absent = [
            f
            for f in files
            if BlobRef(hash_name=action.hash_name, digest=f.digest, size=f.size) in missing
        ]
        named = ", ".join(
            f"{f.path} ({f.digest.hex[:12]}…, {f.size} bytes)" for f in absent[:NAMED_MISSING]
        )
        more = f" and {len(absent) - NAMED_MISSING} more" if len(absent) > NAMED_MISSING else ""
        raise MissingBlobsError(
            f"task {action.task}: {len(absent)} input files are not stored (upload them "
            f"first): {named}{more}"
        )


async def _follow(
    subscription: Subscription, first: list[Any]
) -> AsyncIterator[execution_pb2.ExecutionUpdate]:
    """``first`` (already taken from the subscription), then its live updates; a dropped
    stream closes the subscription (the execution runs on)."""
    try:
        for update in first:
            yield convert.update_message(update)
        async for update in subscription:
            yield convert.update_message(update)
    finally:
        subscription.close()


def _unknown(execution_id: str) -> ExecutionNotFoundError:
    return ExecutionNotFoundError(f"no execution {execution_id!r} in flight (unknown or ended)")


class WorkerSessionServicer(execution_pb2_grpc.WorkerSessionServicer):  # type: ignore[misc]
    """Workers: one ``Connect`` stream per session, routed to the queue's ``WorkerLink``."""

    def __init__(self, *, queue: ExecutionQueue, heartbeat_interval_ms: int) -> None:
        self._queue = queue
        self._heartbeat_interval_ms = heartbeat_interval_ms
        #: SEC-002: which token each connected worker id belongs to.
        self._owners: dict[str, tuple[str, int]] = {}

    async def may_publish(self, token: str, namespace: str, key: Digest) -> bool:
        """SEC-006: whether the worker token ``token`` holds, through a connected session, a
        live lease of the execution of ``key`` in ``namespace``."""
        workers = await self._queue.leased_to(namespace, key)
        return any(self._owners.get(worker, ("", 0))[0] == token for worker in workers)

    @maps_errors_stream
    async def Connect(
        self, request_iterator: AsyncIterator[execution_pb2.WorkerMessage], context: Any
    ) -> AsyncIterator[execution_pb2.ServerMessage]:
        del context
        requests = aiter(request_iterator)
        first = await anext(requests, None)
        if first is None:
            return
        hello = _hello(first)
        identity = current_identity()
        owner = self._owners.get(hello.worker_id)
        if owner is not None and owner[0] != identity.name:
            raise AccessDeniedError(
                f"worker id {hello.worker_id!r} is connected with another token"
            )
        link = await self._queue.connect_worker(
            worker_id=hello.worker_id,
            slots=hello.slots,
            platform=convert.platform_of(hello.platform, f"worker {hello.worker_id}"),
            held_lease_ids=tuple(hello.held_lease_ids),
        )
        session = id(link)
        self._owners[hello.worker_id] = (identity.name, session)
        _log.info(
            "worker connected",
            worker=hello.worker_id,
            slots=hello.slots,
            platform=str(link.platform),
            resumed=len(hello.held_lease_ids),
        )
        reader = asyncio.create_task(self._read(link, requests))
        try:
            yield convert.welcome_message(self._heartbeat_interval_ms)
            async for message in link:
                yield convert.server_message(message)
            if reader.done() and reader.exception() is not None:
                raise reader.exception()  # type: ignore[misc]
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            await self._queue.disconnect_worker(link)
            if self._owners.get(hello.worker_id, ("", 0))[1] == session:
                del self._owners[hello.worker_id]
            _log.info("worker disconnected", worker=hello.worker_id)

    async def _read(
        self, link: WorkerLink, requests: AsyncIterator[execution_pb2.WorkerMessage]
    ) -> None:
        """Route the worker's messages to the queue until its stream ends (then disconnect,
        which ends the response stream too)."""
        queue = self._queue
        try:
            async for message in requests:
                kind = message.WhichOneof("message")
                if kind == "heartbeat":
                    await queue.heartbeat(link, tuple(message.heartbeat.lease_ids))
                elif kind == "log":
                    log = message.log
                    await queue.log(
                        link,
                        log.lease_id,
                        stream=convert.log_stream(log.stream),
                        data=log.data,
                        offset=log.offset,
                    )
                elif kind == "result":
                    accepted = await queue.result(
                        link, message.result.lease_id, convert.work_result(message.result)
                    )
                    if not accepted:
                        _log.info(
                            "late result refused",
                            worker=link.worker_id,
                            lease=message.result.lease_id,
                        )
                elif kind == "released":
                    released = message.released
                    await queue.release(
                        link,
                        released.lease_id,
                        reason=convert.release_reason(released.reason),
                        message=released.message,
                    )
                else:
                    raise InvalidRequestError(
                        f"worker {link.worker_id}: unexpected {kind or 'empty'} message"
                    )
        finally:
            await queue.disconnect_worker(link)


def _hello(message: execution_pb2.WorkerMessage) -> execution_pb2.WorkerMessage.Hello:
    if message.WhichOneof("message") != "hello":
        raise InvalidRequestError("the first message of a worker session must be hello")
    hello = message.hello
    if not hello.worker_id:
        raise InvalidRequestError("hello: worker_id is empty")
    if hello.slots < 1:
        raise InvalidRequestError(f"hello: worker {hello.worker_id} has {hello.slots} slots")
    return hello
