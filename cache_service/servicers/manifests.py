"""``haz.remote.v1.ManifestStore``: thin — parse, call :class:`ManifestService`, reply.

Spec coverage:
* CACHE-011, RC-005, SEC-004 — through :class:`~cache_service.manifests.ManifestService`.
* SEC-006 — a worker token without write scope publishes only under keys it holds a lease on.
* SEC-006 — the producer is :func:`~cache_service.identity.current_identity`.
* RC-001 — a miss is ``found=false``, never an error status.
* SVC-001 — a small lookup is tried on the event loop first, else in the storage pool.
* SEC-003 — read-through lookups answer ``found_in_namespace``; open access tries N only.
Out of scope: authorization (:mod:`cache_service.auth`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from cache_service.identity import AccessDeniedError, current_identity
from cache_service.manifests import ManifestService
from cache_service.offload import Offload
from cache_service.servicers._convert import hash_name, key_digest
from cache_service.servicers._status import maps_errors
from cache_service.storage.base import WOULD_BLOCK
from hazremote.domain.digest import Digest
from hazremote.domain.model import HashName
from hazremote.wire.haz.remote.v1 import cache_pb2, cache_pb2_grpc

__all__ = ["ManifestStoreServicer"]

#: Lookups of at most this many keys first try to answer on the event loop
#: (:meth:`ManifestService.lookup_nowait`): a thread-pool hop costs more CPU than reading a
#: few cached files, and a larger batch would hold the loop too long.
INLINE_LOOKUP_KEYS = 8


def _result(found: tuple[bytes, str] | None) -> cache_pb2.GetManifestResponse:
    if found is None:
        return cache_pb2.GetManifestResponse(found=False)
    document, namespace = found
    return cache_pb2.GetManifestResponse(
        found=True, manifest_json=document, found_in_namespace=namespace
    )


def _chain(namespace: str) -> tuple[str, ...]:
    grant = current_identity().grant
    return (namespace,) if grant is None else grant.lookup_chain(namespace)


#: Whether a worker token may publish under a key: (token name, namespace, key) → allowed.
PublishGate = Callable[[str, str, Digest], Awaitable[bool]]


class ManifestStoreServicer(cache_pb2_grpc.ManifestStoreServicer):  # type: ignore[misc]
    def __init__(
        self,
        *,
        manifests: ManifestService,
        offload: Offload,
        worker_may_publish: PublishGate | None = None,
    ) -> None:
        self._worker_may_publish = worker_may_publish
        self._manifests = manifests
        self._offload = offload

    async def _lookup(
        self, namespace: str, hash_function: int, keys: Sequence[Digest]
    ) -> list[tuple[bytes, str] | None]:
        chain = _chain(namespace)
        name: HashName = hash_name(hash_function)
        if len(keys) <= INLINE_LOOKUP_KEYS:
            found = self._manifests.lookup_nowait(chain, name, keys)
            if found is not WOULD_BLOCK:
                return found
        return await self._offload(self._manifests.lookup, chain, name, keys)

    @maps_errors
    async def GetManifest(
        self, request: cache_pb2.GetManifestRequest, context: Any
    ) -> cache_pb2.GetManifestResponse:
        # The hot path: :meth:`_lookup` inlined (no coroutine in between when the lookup
        # answers on the event loop).
        keys = (key_digest(request.key),)
        chain = _chain(request.namespace)
        name = hash_name(request.hash_function)
        found = self._manifests.lookup_nowait(chain, name, keys)
        if found is not WOULD_BLOCK:
            return _result(found[0])
        (result,) = await self._offload(self._manifests.lookup, chain, name, keys)
        return _result(result)

    @maps_errors
    async def BatchGetManifests(
        self, request: cache_pb2.BatchGetManifestsRequest, context: Any
    ) -> cache_pb2.BatchGetManifestsResponse:
        keys = [key_digest(key) for key in request.keys]
        found = await self._lookup(request.namespace, request.hash_function, keys)
        return cache_pb2.BatchGetManifestsResponse(results=[_result(item) for item in found])

    @maps_errors
    async def PutManifest(
        self, request: cache_pb2.PutManifestRequest, context: Any
    ) -> cache_pb2.PutManifestResponse:
        identity = current_identity()
        key = key_digest(request.key)
        grant = identity.grant
        if grant is not None and grant.role == "worker" and grant.scope != "read-write":
            allowed = self._worker_may_publish is not None and await self._worker_may_publish(
                identity.name, request.namespace, key
            )
            if not allowed:
                raise AccessDeniedError(
                    f"token {identity.name!r} is a worker token: it may publish only the "
                    f"result of an action it holds a lease on (key {key.hex} in namespace "
                    f"{request.namespace!r} is not one)"
                )
        created = await self._offload(
            self._manifests.put,
            request.namespace,
            hash_name(request.hash_function),
            key,
            request.manifest_json,
            producer=identity.name,
        )
        return cache_pb2.PutManifestResponse(created=created)
