"""Where a manifest lookup runs (issue 5): on the event loop when the store can answer
without I/O, in the storage thread pool otherwise — with the same answers, statuses and
metrics either way; and the access interceptor wraps each method once, not per RPC."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import pytest
from prometheus_client import CollectorRegistry

from cache_service import manifests as manifests_module
from cache_service.app import RunningServer
from cache_service.errors import InvalidRequestError
from cache_service.identity import OpenAccess
from cache_service.interceptor import AccessInterceptor
from cache_service.manifests import ManifestService
from cache_service.metrics import ServiceMetrics
from cache_service.servicers.manifests import INLINE_LOOKUP_KEYS
from cache_service.storage.base import WOULD_BLOCK
from cache_service.storage.memory import MemoryBlobStore
from hazremote.domain.digest import Digest, digest_bytes
from hazremote.domain.model import HashName
from hazremote.wire.haz.remote.v1 import cache_pb2, cache_pb2_grpc
from tests.cache_service.manifestkit import RecordingManifests
from tests.cache_service.server.serverkit import BLAKE3, ServerThread, running_server

B3 = HashName.BLAKE3


def _key(label: str) -> Digest:
    return digest_bytes(B3, label.encode())


def _lookups(running: RunningServer, result: str) -> float:
    value = running.metrics.registry.get_sample_value(
        "haz_cache_manifest_lookups_total", {"result": result}
    )
    return 0.0 if value is None else value


def _get(served: ServerThread, key: Digest) -> cache_pb2.GetManifestResponse:
    return cast(
        cache_pb2.GetManifestResponse,
        served.manifests().GetManifest(
            cache_pb2.GetManifestRequest(namespace="main", hash_function=BLAKE3, key=key.raw)
        ),
    )


def test_a_lookup_the_store_answers_without_io_runs_on_the_event_loop() -> None:
    manifests = RecordingManifests()
    manifests.inner.put_if_absent("main", B3, _key("hit"), b"doc")
    with running_server(manifests=manifests) as served:
        hit, miss = _get(served, _key("hit")), _get(served, _key("miss"))
        assert (hit.found, hit.manifest_json, hit.found_in_namespace) == (True, b"doc", "main")
        assert not miss.found
        assert manifests.get_threads == [], "no thread-pool read when the fast path answers"
        assert set(manifests.nowait_threads) == {served.loop_thread}
        assert (_lookups(served.running, "hit"), _lookups(served.running, "miss")) == (1, 1)


def test_a_lookup_that_would_block_runs_in_the_thread_pool_with_the_same_answer() -> None:
    manifests = RecordingManifests(blocks=True)
    manifests.inner.put_if_absent("main", B3, _key("hit"), b"doc")
    with running_server(manifests=manifests) as served:
        hit, miss = _get(served, _key("hit")), _get(served, _key("miss"))
        assert (hit.found, hit.manifest_json) == (True, b"doc")
        assert not miss.found
        assert len(manifests.get_threads) == 2
        assert served.loop_thread not in manifests.get_threads
        # Counted once per lookup, by the path that answered.
        assert (_lookups(served.running, "hit"), _lookups(served.running, "miss")) == (1, 1)


def test_a_large_batch_goes_to_the_thread_pool_directly() -> None:
    """A batch larger than INLINE_LOOKUP_KEYS would hold the event loop too long."""
    manifests = RecordingManifests()
    keys = [_key(f"k{i}") for i in range(INLINE_LOOKUP_KEYS + 1)]
    manifests.inner.put_if_absent("main", B3, keys[0], b"first")
    with running_server(manifests=manifests) as served:
        reply = served.manifests().BatchGetManifests(
            cache_pb2.BatchGetManifestsRequest(
                namespace="main", hash_function=BLAKE3, keys=[k.raw for k in keys]
            )
        )
        assert [r.found for r in reply.results] == [True] + [False] * INLINE_LOOKUP_KEYS
        assert manifests.nowait_threads == []
        assert len(manifests.get_threads) == len(keys)
        small = served.manifests().BatchGetManifests(
            cache_pb2.BatchGetManifestsRequest(
                namespace="main", hash_function=BLAKE3, keys=[k.raw for k in keys[:2]]
            )
        )
        assert [r.found for r in small.results] == [True, False]
        assert len(manifests.get_threads) == len(keys), "a small batch takes the fast path"


@pytest.mark.parametrize("blocks", [False, True])
def test_lookup_nowait_follows_the_read_through_chain_and_counts_once(blocks: bool) -> None:
    """SEC-003 on the fast path; a WOULD_BLOCK answer counts nothing (the pool lookup does)."""
    store = RecordingManifests(blocks=blocks)
    store.inner.put_if_absent("main", B3, _key("trunk"), b"from main")
    store.inner.put_if_absent("pr-1", B3, _key("own"), b"from pr")
    counted: list[bool] = []
    service = ManifestService(
        manifests=store,
        blobs=MemoryBlobStore(),
        max_batch_items=10,
        on_lookup=counted.append,
    )
    keys = [_key("own"), _key("trunk"), _key("nowhere")]
    found = service.lookup_nowait(("pr-1", "main"), B3, keys)
    if blocks:
        assert found is WOULD_BLOCK
        assert counted == []
        found = service.lookup(("pr-1", "main"), B3, keys)
    assert found == [(b"from pr", "pr-1"), (b"from main", "main"), None]
    assert counted == [True, True, False]


@pytest.mark.parametrize("blocks", [False, True])
def test_every_namespace_of_the_chain_is_validated_on_every_lookup(blocks: bool) -> None:
    """SEC-003: remembering valid namespaces (issue 5) never lets an invalid one through, nor
    rejects a valid one, also once the memory was cleared for holding too many."""
    store = RecordingManifests(blocks=blocks)
    service = ManifestService(manifests=store, blobs=MemoryBlobStore(), max_batch_items=10)
    many = [f"ns-{n}" for n in range(2 * manifests_module._VALID_NAMESPACES_MAX + 1)]
    for namespace in many:
        assert service.lookup((namespace,), B3, [_key("k")]) == [None]
    for namespace in many[:3]:
        assert service.lookup((namespace,), B3, [_key("k")]) == [None]
    for bad in ("", "-lead", "a/b", "x" * 65, "ü"):
        with pytest.raises(InvalidRequestError, match="namespace"):
            service.lookup_nowait(("main", bad), B3, [_key("k")])
        with pytest.raises(InvalidRequestError, match="namespace"):
            service.lookup((bad, "main"), B3, [_key("k")])
        with pytest.raises(InvalidRequestError, match="namespace"):
            manifests_module.validate_namespace(bad)


def test_each_method_handler_is_wrapped_once() -> None:
    """The interceptor wraps a method when it is first seen, not on every RPC."""
    interceptor = AccessInterceptor(
        metrics=ServiceMetrics(CollectorRegistry()), authenticator=OpenAccess()
    )
    added: list[Any] = []
    registered: dict[str, Any] = {}

    class _Server:
        def add_generic_rpc_handlers(self, handlers: Any) -> None:
            added.extend(handlers)

        def add_registered_method_handlers(self, service: str, handlers: Any) -> None:
            registered.update({f"/{service}/{name}": h for name, h in handlers.items()})

    servicer = cache_pb2_grpc.ManifestStoreServicer()
    cache_pb2_grpc.add_ManifestStoreServicer_to_server(
        servicer,
        interceptor.registrar(_Server()),
    )
    method = "/haz.remote.v1.ManifestStore/GetManifest"

    @dataclass
    class _Details:
        method: str
        invocation_metadata: tuple[tuple[str, str], ...] = ()

    (generic,) = added
    first = generic.service(_Details(method))
    assert first is generic.service(_Details(method))
    assert generic.service(_Details("/haz.remote.v1.ManifestStore/Nope")) is None
    assert first.unary_unary is not servicer.GetManifest
    assert registered[method].unary_unary is not servicer.GetManifest
