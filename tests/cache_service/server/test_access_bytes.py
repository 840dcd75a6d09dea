"""SVC-004: the access event's ``bytes_in`` / ``bytes_out`` and the byte counters are the sizes
of the messages on the wire, for every kind of RPC (unary, client, server and bidirectional
streaming, and a handler that writes its responses with ``context.write``).

The client sends and receives raw bytes (no (de)serializers), so the expected sizes are the
wire sizes themselves, not a re-encoding of the messages."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from cache_service import interceptor
from hazremote.wire.haz.remote.v1 import cache_pb2
from tests.cache_service.server.serverkit import (
    BLAKE3,
    IDENTITY,
    ServerThread,
    digest_of,
    running_server,
)


class _Recorder:
    """Stands in for the access logger: keeps the events."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def rpc(self, **fields: Any) -> None:
        with self._lock:
            self.events.append({"event": "rpc", **fields})

    def wait_for(self, method: str, count: int = 1) -> list[dict[str, Any]]:
        """The events of ``method`` once there are ``count`` (the server logs an RPC after its
        status reached the client)."""
        deadline = time.monotonic() + 10
        while True:
            with self._lock:
                found = [e for e in self.events if e.get("method") == method]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.01)


@pytest.fixture
def observed(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ServerThread, _Recorder]]:
    recorder = _Recorder()
    monkeypatch.setattr(interceptor, "_log", recorder)
    with running_server() as server:
        yield server, recorder


def _counted(server: ServerThread, family: str, method: str) -> float:
    value = server.running.metrics.registry.get_sample_value(family, {"method": method})
    return 0.0 if value is None else value


def _check(
    server: ServerThread, recorder: _Recorder, method: str, sent: list[bytes], got: list[bytes]
) -> None:
    [event] = recorder.wait_for(method)
    assert event["code"] == "OK"
    assert event["bytes_in"] == sum(len(m) for m in sent) > 0
    assert event["bytes_out"] == sum(len(m) for m in got) > 0
    assert _counted(server, "haz_cache_received_bytes_total", method) == event["bytes_in"]
    assert _counted(server, "haz_cache_sent_bytes_total", method) == event["bytes_out"]


def test_unary_and_client_and_server_streaming_count_wire_bytes(
    observed: tuple[ServerThread, _Recorder],
) -> None:
    server, recorder = observed
    channel = server.channel
    data = bytes(range(256)) * 1000  # 256,000 bytes: several ReadBlob chunks

    # client streaming: WriteBlob in three messages
    parts = [data[:100_000], data[100_000:200_000], data[200_000:]]
    writes = [
        cache_pb2.WriteBlobChunk(
            hash_function=BLAKE3, digest=digest_of(data), compression=IDENTITY, data=parts[0]
        ).SerializeToString(),
        cache_pb2.WriteBlobChunk(data=parts[1]).SerializeToString(),
        cache_pb2.WriteBlobChunk(data=parts[2], finish=True).SerializeToString(),
    ]
    write = channel.stream_unary("/haz.remote.v1.ContentStore/WriteBlob")
    written = write(iter(writes))
    assert cache_pb2.WriteBlobResponse.FromString(written).committed_size_bytes > 0
    _check(server, recorder, "ContentStore/WriteBlob", writes, [written])

    # unary
    find = cache_pb2.FindMissingBlobsRequest(
        hash_function=BLAKE3, digests=[digest_of(data), digest_of(b"absent")]
    ).SerializeToString()
    found = channel.unary_unary("/haz.remote.v1.ContentStore/FindMissingBlobs")(find)
    assert len(cache_pb2.FindMissingBlobsResponse.FromString(found).missing) == 1
    _check(server, recorder, "ContentStore/FindMissingBlobs", [find], [found])

    # server streaming: ReadBlob, uncompressed, in several chunks
    read = cache_pb2.ReadBlobRequest(
        hash_function=BLAKE3, digest=digest_of(data), accepted_compressions=[IDENTITY]
    ).SerializeToString()
    chunks = list(channel.unary_stream("/haz.remote.v1.ContentStore/ReadBlob")(read))
    assert len(chunks) > 1
    assert b"".join(cache_pb2.ReadBlobChunk.FromString(c).data for c in chunks) == data
    _check(server, recorder, "ContentStore/ReadBlob", [read], chunks)


def test_bidirectional_stream_counts_wire_bytes(observed: tuple[ServerThread, _Recorder]) -> None:
    server, recorder = observed
    asks = [
        reflection_pb2.ServerReflectionRequest(list_services="").SerializeToString(),
        reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="haz.remote.v1.ContentStore"
        ).SerializeToString(),
    ]
    info = server.channel.stream_stream(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
    )
    answers = list(info(iter(asks)))
    assert len(answers) == 2
    _check(server, recorder, "ServerReflection/ServerReflectionInfo", asks, answers)


def test_handler_writing_its_responses_is_observed(
    observed: tuple[ServerThread, _Recorder],
) -> None:
    """Health ``Watch`` writes with ``context.write`` (no generator): it is served, and what it
    wrote is counted."""
    server, recorder = observed
    ask = health_pb2.HealthCheckRequest(service="").SerializeToString()
    watch = server.channel.unary_stream("/grpc.health.v1.Health/Watch")(ask)
    first = next(watch)
    assert health_pb2.HealthCheckResponse.FromString(first).status == (
        health_pb2.HealthCheckResponse.SERVING
    )
    watch.cancel()
    [event] = recorder.wait_for("Health/Watch")
    assert event["code"] == "CANCELLED"
    assert event["bytes_in"] == len(ask)
    assert event["bytes_out"] == len(first)


def test_undecodable_request_is_logged_and_refused(
    observed: tuple[ServerThread, _Recorder],
) -> None:
    """A request that does not decode fails the call (INVALID_ARGUMENT, issue 13) and is
    still counted and logged."""
    server, recorder = observed
    garbage = b"\xff\xff\xff"
    with pytest.raises(grpc.RpcError) as caught:
        server.channel.unary_unary("/haz.remote.v1.ContentStore/FindMissingBlobs")(garbage)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    [event] = recorder.wait_for("ContentStore/FindMissingBlobs")
    assert event["code"] == "INVALID_ARGUMENT"
    assert event["bytes_in"] == len(garbage)
    assert event["bytes_out"] == 0
