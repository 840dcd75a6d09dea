"""``haz.remote.v1.Capabilities``: what this server supports and its limits.

Spec coverage:
* SVC-006 — the configured limits are reported, so clients size batches and chunks to them.
* SEC-002, SEC-003 — ``auth_disabled`` and the caller's token as the server sees it.
* ``haz doctor`` (§5) — server version and clock (for clock skew).
* RX-001 — ``execution_offered``, and the pools of live workers with their free slots.
Out of scope: authorization (:mod:`cache_service.auth`).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from cache_service.cas import BlobLimits
from cache_service.identity import ANONYMOUS, current_identity
from cache_service.scheduling import PoolStatus
from cache_service.servicers._execution_convert import execution_pools
from cache_service.servicers._status import maps_errors
from hazremote.domain.digest import HASH_IDS
from hazremote.wire.haz.remote.v1 import cache_pb2, cache_pb2_grpc

__all__ = ["CapabilitiesServicer", "ServerInfo"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerInfo:
    """What GetCapabilities reports besides the blob limits."""

    version: str
    max_message_size: int
    auth_disabled: bool = True


class CapabilitiesServicer(cache_pb2_grpc.CapabilitiesServicer):  # type: ignore[misc]
    def __init__(
        self,
        *,
        info: ServerInfo,
        limits: BlobLimits,
        clock: Callable[[], float] = time.time,
        pools: Callable[[], Awaitable[tuple[PoolStatus, ...]]] | None = None,
    ) -> None:
        """``pools``: the execution queue's live pools; None when execution is not offered."""
        self._pools = pools
        self._info = info
        self._limits = limits
        self._clock = clock

    @maps_errors
    async def GetCapabilities(
        self, request: cache_pb2.GetCapabilitiesRequest, context: Any
    ) -> cache_pb2.ServerCapabilities:
        del context
        identity = current_identity()
        grant = identity.grant
        reply = cache_pb2.ServerCapabilities(
            server_version=self._info.version,
            server_time_unix_ms=int(self._clock() * 1000),
            hash_functions=sorted(HASH_IDS.values()),  # type: ignore[arg-type]
            compressions=[cache_pb2.COMPRESSION_IDENTITY, cache_pb2.COMPRESSION_ZSTD],
            max_blob_size_bytes=self._limits.max_blob_size,
            max_batch_total_size_bytes=self._limits.max_batch_total_size,
            max_batch_items=self._limits.max_batch_items,
            max_message_size_bytes=self._info.max_message_size,
            stream_chunk_size_bytes=self._limits.stream_chunk_size,
            auth_disabled=self._info.auth_disabled,
        )
        if self._pools is not None:
            reply.execution_offered = True
            reply.execution_pools.extend(execution_pools(await self._pools()))
        if identity.name != ANONYMOUS.name:
            reply.token_name = identity.name
        if grant is not None:
            reply.token_scope = grant.scope_for(request.namespace) or ""
            reply.token_namespaces.extend(grant.namespaces)
            reply.token_read_through.extend(grant.read_through)
        return reply
