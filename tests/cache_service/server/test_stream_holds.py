"""Issue 13, item 2: slow WriteBlob clients never hold the storage threads lookups need, and
one caller cannot take every stream slot.

Each attack holds streams that sent one chunk and then go quiet; the server is then inside
``_Inbox.get``, waiting for the next chunk (found by looking at the server threads' frames, so
the attack has landed before anything is asserted).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import grpc
import pytest

from cache_service.auth import TokenAuthority
from cache_service.config import ServiceConfigError, resolve_config
from cache_service.servicers import stream_bridges
from hazremote.wire.haz.remote.v1 import cache_pb2, cache_pb2_grpc
from tests.cache_service.auth.authkit import bearer, stored_manifest, tokens_yaml, write_tokens
from tests.cache_service.server.serverkit import (
    BLAKE3,
    TEST_LIMITS,
    ServerThread,
    digest_of,
    put_request,
    running_server,
    server_config,
    write_chunks,
)

_INBOX_GET = stream_bridges.Inbox.get.__code__
#: The size of a slow writer's blob (never stored).
_SLOW_BLOB = 200 << 10


def _waiting_for_clients() -> int:
    """Threads of this process inside ``_Inbox.get`` (a WriteBlob waiting for a chunk)."""
    count = 0
    for frame in sys._current_frames().values():
        walk: FrameType | None = frame
        while walk is not None:
            if walk.f_code is _INBOX_GET:
                count += 1
                break
            walk = walk.f_back
    return count


class _SlowWriters:
    """WriteBlob streams that send their first chunk, then nothing until released;
    ``declared`` claims a size other than the blob's."""

    def __init__(
        self,
        server: ServerThread,
        count: int,
        *,
        token: str | None = None,
        declared: int | None = None,
    ) -> None:
        self._release = threading.Event()
        metadata = () if token is None else bearer(token)
        self.calls = [
            server.content().WriteBlob.future(
                self._chunks(os.urandom(_SLOW_BLOB), declared), metadata=metadata, timeout=60
            )
            for _ in range(count)
        ]

    def _chunks(self, data: bytes, declared: int | None) -> Iterator[cache_pb2.WriteBlobChunk]:
        first = write_chunks(data, chunk=64 << 10)[0]
        if declared is not None:
            first.digest.size_bytes = declared
        yield first
        self._release.wait(60)  # then the stream ends without its finish chunk

    def wait_until_waiting(self, total: int) -> None:
        deadline = time.monotonic() + 20
        while _waiting_for_clients() < total:
            assert time.monotonic() < deadline, "the slow writers never reached the server"
            time.sleep(0.01)

    def release(self) -> list[grpc.StatusCode]:
        self._release.set()
        codes = []
        for call in self.calls:
            try:
                call.result()
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as exc:
                codes.append(exc.code())
        return codes


def test_silent_writers_leave_lookups_their_storage_threads() -> None:
    """Issue 13 (2): more silent WriteBlob streams than storage threads; lookups still answer."""
    config = server_config(storage_threads=2, stream_idle_timeout=45.0)
    with running_server(config) as server:
        writers = _SlowWriters(server, 4)
        try:
            writers.wait_until_waiting(4)
            data = b"looked up while writers wait"
            reply = server.content().FindMissingBlobs(
                cache_pb2.FindMissingBlobsRequest(hash_function=BLAKE3, digests=[digest_of(data)]),
                timeout=10,
            )
            assert list(reply.missing) == [digest_of(data)]
            get = server.manifests().BatchGetManifests(
                cache_pb2.BatchGetManifestsRequest(
                    namespace="default", hash_function=BLAKE3, keys=[b"k" * 32]
                ),
                timeout=10,
            )
            assert len(get.results) == 1
            manifest = stored_manifest(server, "put-while-writers-wait")
            put = server.manifests().PutManifest(put_request(manifest), timeout=10)
            assert put.created
        finally:
            codes = writers.release()
        # Each stream ended without its finish chunk: refused, nothing stored.
        assert set(codes) == {grpc.StatusCode.INVALID_ARGUMENT}
        assert [b for b in server.blob_leaf.iterate() if b.ref.size == _SLOW_BLOB] == []


def test_one_token_cannot_take_every_stream_slot(tmp_path: Path) -> None:
    """Issue 13 (2), SVC-006: a token's streams beyond max_streams_per_caller are refused with
    RESOURCE_EXHAUSTED naming the token; other tokens still stream."""
    tokens = write_tokens(tmp_path / "tokens.yaml", tokens_yaml())
    limits = dataclasses.replace(TEST_LIMITS, max_concurrent_streams=8, max_streams_per_caller=2)
    with running_server(
        server_config(limits=limits), authenticator=TokenAuthority.open(tokens)
    ) as server:
        writers = _SlowWriters(server, 2, token="ci-pr")
        try:
            writers.wait_until_waiting(2)
            data = os.urandom(100 << 10)
            with pytest.raises(grpc.RpcError) as caught:
                server.content().WriteBlob(
                    iter(write_chunks(data)), metadata=bearer("ci-pr"), timeout=10
                )
            assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert caught.value.details() == (
                "token 'ci-pr' has 2 blob streams in progress; the per-caller limit is 2 "
                "(max_streams_per_caller)"
            )
            reply = server.content().WriteBlob(
                iter(write_chunks(data)), metadata=bearer("ci-main"), timeout=10
            )
            assert reply.committed_size_bytes == len(data)
            stored_manifest(server, "after-refusal", token="ci-main")  # lookups unaffected
        finally:
            writers.release()
        # The slots were given back: ci-pr streams again.
        reply = server.content().WriteBlob(
            iter(write_chunks(data)), metadata=bearer("ci-pr"), timeout=10
        )
        assert reply.committed_size_bytes == len(data)


def test_without_tokens_the_caller_is_the_peer_host() -> None:
    """Issue 13 (2): on an open server, every connection from one host shares its limit."""
    limits = dataclasses.replace(TEST_LIMITS, max_concurrent_streams=8, max_streams_per_caller=1)
    with running_server(server_config(limits=limits)) as server:
        writers = _SlowWriters(server, 1)
        try:
            writers.wait_until_waiting(1)
            other = grpc.insecure_channel(server.target)  # a second connection, same host
            try:
                with pytest.raises(grpc.RpcError) as caught:
                    next(
                        cache_pb2_grpc.ContentStoreStub(other).ReadBlob(
                            cache_pb2.ReadBlobRequest(hash_function=BLAKE3, digest=digest_of(b"x")),
                            timeout=10,
                        )
                    )
            finally:
                other.close()
            assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert (caught.value.details() or "").startswith(
                "peer 127.0.0.1 has 1 blob streams in progress"
            )
        finally:
            writers.release()


def test_per_caller_limit_configuration() -> None:
    """Issue 13 (2): default 64, follows a lowered total, never above the total."""
    assert resolve_config(flags={}, env={}).limits.max_streams_per_caller == 64
    lowered = resolve_config(flags={"max_concurrent_streams": "16"}, env={})
    assert lowered.limits.max_streams_per_caller == 16
    chosen = resolve_config(flags={}, env={"HAZ_CACHE_MAX_STREAMS_PER_CALLER": "4"})
    assert chosen.limits.max_streams_per_caller == 4
    with pytest.raises(ServiceConfigError) as caught:
        resolve_config(
            flags={"max_concurrent_streams": "16", "max_streams_per_caller": "32"}, env={}
        )
    assert str(caught.value) == (
        "max_streams_per_caller (32) cannot exceed max_concurrent_streams (16)"
    )


def test_declared_sizes_reserve_no_disk_that_was_not_sent(tmp_path: Path) -> None:
    """Issue 13 (3): 4 streams declaring 4 GiB that send 64 KiB each hold about one
    reservation step of disk each (16 MiB), not 16 GiB; nothing is left when they end."""
    store = tmp_path / "store"
    limits = dataclasses.replace(TEST_LIMITS, max_blob_size=4 << 30)
    config = server_config(storage=store.as_uri(), limits=limits)
    with running_server(config, config_storage=True) as server:
        writers = _SlowWriters(server, 4, declared=4 << 30)
        try:
            writers.wait_until_waiting(4)
            temps = list(store.rglob(".tmp-*"))
            assert len(temps) == 4
            held = sum(os.stat(t).st_blocks * 512 for t in temps)
            assert held <= 4 * (17 << 20), f"{held} bytes of disk held for 256 KiB sent"
        finally:
            codes = writers.release()
        assert set(codes) == {grpc.StatusCode.INVALID_ARGUMENT}
        assert list(store.rglob(".tmp-*")) == []
