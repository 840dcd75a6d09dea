"""Operating surface of the server: capabilities, health, reflection, metrics, robustness
(SVC-004, SVC-006, §5 doctor fields)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import threading
import time
import urllib.request

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from cache_service import __version__
from hazremote.wire.haz.remote.v1 import cache_pb2, cache_pb2_grpc, digest_pb2
from tests.cache_service.server.serverkit import (
    BLAKE3,
    TEST_LIMITS,
    ZSTD,
    ServerThread,
    digest_of,
    running_server,
    server_config,
    upload,
    write_chunks,
)


def test_capabilities_report_version_clock_and_limits(server: ServerThread) -> None:
    """SVC-006: the configured limits are reported; server_version and clock for doctor."""
    before = int(time.time() * 1000)
    caps = server.capabilities().GetCapabilities(cache_pb2.GetCapabilitiesRequest(namespace="main"))
    after = int(time.time() * 1000)
    assert caps.server_version == __version__
    assert before - 1000 <= caps.server_time_unix_ms <= after + 1000
    assert set(caps.hash_functions) == {
        digest_pb2.HASH_FUNCTION_BLAKE3,
        digest_pb2.HASH_FUNCTION_SHA256,
    }
    assert set(caps.compressions) == {cache_pb2.COMPRESSION_IDENTITY, ZSTD}
    assert caps.max_blob_size_bytes == TEST_LIMITS.max_blob_size
    assert caps.max_batch_items == TEST_LIMITS.max_batch_items
    assert caps.max_batch_total_size_bytes == TEST_LIMITS.max_batch_total_size
    assert caps.max_message_size_bytes == TEST_LIMITS.max_message_size
    assert caps.stream_chunk_size_bytes == TEST_LIMITS.stream_chunk_size
    assert caps.auth_disabled is True


def test_health_check_reports_serving(server: ServerThread) -> None:
    """SVC-004: grpc.health.v1 answers SERVING overall and per service."""
    stub = health_pb2_grpc.HealthStub(server.channel)
    for service in ("", "haz.remote.v1.ContentStore", "haz.remote.v1.ManifestStore"):
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_services(server: ServerThread) -> None:
    """SVC-004: server reflection lists the cache API and health services."""
    stub = reflection_pb2_grpc.ServerReflectionStub(server.channel)
    replies = list(
        stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    )
    names = {s.name for s in replies[0].list_services_response.service}
    assert {
        "haz.remote.v1.Capabilities",
        "haz.remote.v1.ContentStore",
        "haz.remote.v1.ManifestStore",
        "grpc.health.v1.Health",
    } <= names


def test_metrics_endpoint_exposes_rpc_counters(server: ServerThread) -> None:
    """SVC-004: Prometheus text on the metrics port counts RPCs by method and code."""
    upload(server, b"metrics blob")
    server.manifests().GetManifest(
        cache_pb2.GetManifestRequest(namespace="main", hash_function=BLAKE3, key=b"\x00" * 32)
    )
    with contextlib.suppress(grpc.RpcError):
        server.content().FindMissingBlobs(
            cache_pb2.FindMissingBlobsRequest(
                hash_function=BLAKE3, digests=[digest_pb2.Digest(hash=b"x")]
            )
        )
    url = f"http://127.0.0.1:{server.running.metrics_port}/metrics"
    expected = [
        'haz_cache_rpcs_total{code="OK",method="ContentStore/BatchUpdateBlobs"}',
        'haz_cache_rpcs_total{code="INVALID_ARGUMENT",method="ContentStore/FindMissingBlobs"}',
        'haz_cache_manifest_lookups_total{result="miss"}',
        "haz_cache_rpc_duration_seconds_bucket",
        'haz_cache_received_bytes_total{method="ContentStore/BatchUpdateBlobs"}',
    ]
    # An aborted RPC's status reaches the client before the server has counted it: metrics
    # are eventually consistent (as any scrape is), so poll briefly.
    deadline = time.monotonic() + 10
    while True:
        text = urllib.request.urlopen(url, timeout=10).read().decode()
        missing = [line for line in expected if line not in text]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert missing == []


def test_garbage_bytes_on_the_port_do_not_stop_the_server(server: ServerThread) -> None:
    """Robustness: raw garbage and a half-open HTTP/2 preface leave the server serving."""
    for payload in (
        b"\x00\xff" * 5000,
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x07" * 100,
        b"GET / HTTP/1.1\r\n\r\n",
    ):
        with socket.create_connection(("127.0.0.1", server.running.port), timeout=5) as sock:
            sock.sendall(payload)
            sock.settimeout(2)
            with contextlib.suppress(TimeoutError, ConnectionError):
                sock.recv(1024)
    assert (
        server.content()
        .FindMissingBlobs(
            cache_pb2.FindMissingBlobsRequest(hash_function=BLAKE3, digests=[digest_of(b"alive")])
        )
        .missing[0]
        .hash
        == digest_of(b"alive").hash
    )


def test_shutdown_refuses_new_rpcs_but_finishes_in_flight_streams() -> None:
    """SVC-005: on stop the server refuses new calls while an open stream completes."""
    limits = dataclasses.replace(TEST_LIMITS, max_blob_size=64 << 20)
    with running_server(server_config(limits=limits, shutdown_grace=30.0)) as server:
        data = os.urandom(24 << 20)  # larger than any HTTP/2 window: stays in flight
        server.content().WriteBlob(iter(write_chunks(data, chunk=512 << 10)))
        in_flight = server.content().ReadBlob(
            cache_pb2.ReadBlobRequest(hash_function=BLAKE3, digest=digest_of(data))
        )
        first = next(in_flight)
        server.stop.set()
        probe = grpc.insecure_channel(server.target)
        refused = False
        for _ in range(200):
            try:
                cache_pb2_grpc.CapabilitiesStub(probe).GetCapabilities(
                    cache_pb2.GetCapabilitiesRequest(), timeout=1
                )
            except grpc.RpcError:
                refused = True
                break
            threading.Event().wait(0.05)
        probe.close()
        assert refused
        assert first.data + b"".join(chunk.data for chunk in in_flight) == data
