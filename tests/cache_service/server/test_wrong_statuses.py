"""Issue 13 item 8: requests that are the client's fault end in the status that says so, and
are logged as the client's fault (never as an ``internal error``), on a real
``haz-cache-service`` process over loopback.

Spec coverage:
* SVC-006 — a bad request is ``INVALID_ARGUMENT``; ``INTERNAL`` only for the server's own
  faults (an over-long JSON integer, undecodable protobuf bytes).
* CACHE-011 — the strict manifest parser reports an over-long integer as a ManifestError.
* SVC-006 — a WriteBlob client silent past ``--stream-idle-timeout`` is ``DEADLINE_EXCEEDED``
  (was ``INTERNAL`` and a ``TimeoutError`` in the error log).
* SEC-002 — authentication comes before decoding: undecodable bytes from a caller who is not
  authenticated are ``UNAUTHENTICATED``.
"""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from cache_service.auth import TokenAuthority
from cache_service.config import ServiceConfigError, resolve_config
from hazremote.wire.haz.remote.v1 import cache_pb2
from tests.cache_service.auth.authkit import bearer, tokens_yaml, write_tokens
from tests.cache_service.server.serverkit import (
    BLAKE3,
    make_manifest,
    put_request,
    running_server,
    write_chunks,
)
from tests.cache_service.server.test_command import Service

#: Far more digits than CPython's int conversion allows (4,300).
HUGE_INT = "9" * 5000


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    tmp = tmp_path_factory.mktemp("statuses")
    started = Service(
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--storage",
        str(tmp / "store"),
        "--metrics-listen",
        "127.0.0.1:0",
        "--log-format",
        "json",
        "--stream-idle-timeout",
        "1s",
    )
    try:
        started.wait_for("listening on ")
        yield started
    finally:
        if started.proc.poll() is None:
            started.proc.send_signal(signal.SIGTERM)
            started.proc.wait(timeout=30)


@pytest.fixture
def channel(service: Service) -> Iterator[grpc.Channel]:
    address = next(line for line in service.seen if line.startswith("listening on "))
    with grpc.insecure_channel(address.removeprefix("listening on ")) as opened:
        yield opened


def _events_until_rpc(service: Service, method: str) -> list[dict[str, Any]]:
    """The JSON events logged up to and including the access event of ``method``."""
    events: list[dict[str, Any]] = []
    while True:
        line = service.wait_for("{")
        event = json.loads(line)
        events.append(event)
        if event.get("event") == "rpc" and event.get("method") == method:
            return events


def _assert_clients_fault(events: list[dict[str, Any]], code: str) -> None:
    assert events[-1]["code"] == code
    assert [e for e in events if e.get("level") in ("error", "critical")] == []
    assert [e for e in events if "internal" in str(e.get("event"))] == []


def test_manifest_with_an_over_long_integer_is_invalid_argument(
    service: Service, channel: grpc.Channel
) -> None:
    """A JSON integer of 5,000 digits: ``INVALID_ARGUMENT`` naming it, not ``INTERNAL``."""
    manifest = make_manifest(key_label="huge-int")
    document = manifest.to_json().replace(b"1700000000", HUGE_INT.encode(), 1)
    assert HUGE_INT.encode() in document
    put = channel.unary_unary(
        "/haz.remote.v1.ManifestStore/PutManifest",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=lambda raw: raw,
    )
    with pytest.raises(grpc.RpcError) as caught:
        put(put_request(manifest, document=document), timeout=30)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "integer" in (caught.value.details() or "")
    _assert_clients_fault(
        _events_until_rpc(service, "ManifestStore/PutManifest"), "INVALID_ARGUMENT"
    )


#: Not a protobuf message: a field of the reserved number 0.
GARBAGE = b"\x00\xff\xff\xff"


def _raw(channel: grpc.Channel, method: str, *, streaming: str = "") -> Any:
    """A call of ``method`` that sends raw bytes (identity serializers)."""
    make = {
        "": channel.unary_unary,
        "in": channel.stream_unary,
        "out": channel.unary_stream,
    }[streaming]
    return make(method, request_serializer=lambda b: b, response_deserializer=lambda b: b)


def _complete(reply: Any) -> None:
    """Wait for the end of a call (a response stream is read to its end)."""
    if isinstance(reply, grpc.Call):
        list(reply)


@pytest.mark.parametrize(
    "method",
    [
        "ContentStore/FindMissingBlobs",
        "ContentStore/BatchUpdateBlobs",
        "ManifestStore/GetManifest",
        "ManifestStore/PutManifest",
        "Capabilities/GetCapabilities",
    ],
)
def test_undecodable_unary_request_is_invalid_argument(
    service: Service, channel: grpc.Channel, method: str
) -> None:
    """Undecodable bytes on a unary method: ``INVALID_ARGUMENT`` naming the method (was
    ``UNKNOWN``), logged as the client's fault."""
    with pytest.raises(grpc.RpcError) as caught:
        _raw(channel, f"/haz.remote.v1.{method}")(GARBAGE, timeout=30)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid message" in (caught.value.details() or "")
    _assert_clients_fault(_events_until_rpc(service, method), "INVALID_ARGUMENT")


def test_undecodable_read_blob_request_is_invalid_argument(
    service: Service, channel: grpc.Channel
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        list(_raw(channel, "/haz.remote.v1.ContentStore/ReadBlob", streaming="out")(GARBAGE))
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    _assert_clients_fault(_events_until_rpc(service, "ContentStore/ReadBlob"), "INVALID_ARGUMENT")


@pytest.mark.parametrize("position", [0, 1])
def test_undecodable_write_blob_message_is_invalid_argument(
    service: Service, channel: grpc.Channel, position: int
) -> None:
    """An undecodable first or later WriteBlob message: ``INVALID_ARGUMENT`` (was
    ``INTERNAL`` and an error log)."""
    data = b"x" * 100
    first = write_chunks(data, finish=False)[0].SerializeToString()
    messages = [GARBAGE] if position == 0 else [first, GARBAGE]
    with pytest.raises(grpc.RpcError) as caught:
        _raw(channel, "/haz.remote.v1.ContentStore/WriteBlob", streaming="in")(
            iter(messages), timeout=30
        )
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert f"message {position + 1} of the stream" in (caught.value.details() or "")
    _assert_clients_fault(_events_until_rpc(service, "ContentStore/WriteBlob"), "INVALID_ARGUMENT")


def test_undecodable_bytes_are_authenticated_first(tmp_path: Path) -> None:
    """Authentication comes before decoding: a stranger's garbage is ``UNAUTHENTICATED``, an
    authenticated caller's ``INVALID_ARGUMENT`` (authorization, which needs the namespace,
    comes after decoding)."""
    path = write_tokens(tmp_path / "tokens.yaml", tokens_yaml())
    with running_server(authenticator=TokenAuthority.open(path)) as server:
        for method in ("ManifestStore/GetManifest", "ContentStore/ReadBlob"):
            streaming = "out" if method.endswith("ReadBlob") else ""
            call = _raw(server.channel, f"/haz.remote.v1.{method}", streaming=streaming)
            codes = []
            for metadata in ((), bearer("wrong-secret"), bearer("ci-pr")):
                with pytest.raises(grpc.RpcError) as caught:
                    _complete(call(GARBAGE, timeout=30, metadata=metadata))
                codes.append(caught.value.code())
            assert codes == [
                grpc.StatusCode.UNAUTHENTICATED,
                grpc.StatusCode.UNAUTHENTICATED,
                grpc.StatusCode.INVALID_ARGUMENT,
            ], method


def test_silent_write_blob_client_is_deadline_exceeded(
    service: Service, channel: grpc.Channel
) -> None:
    """A WriteBlob client that sends its first chunk and then nothing: the server drops it
    after the idle timeout (1 s here) with ``DEADLINE_EXCEEDED`` saying so, logged as the
    client's fault; nothing is stored."""
    data = b"silent" * 1000
    first = write_chunks(data, finish=False)[0]
    released = threading.Event()

    def messages() -> Iterator[Any]:
        yield first
        released.wait(60)  # silent until the call is over

    write = channel.stream_unary(
        "/haz.remote.v1.ContentStore/WriteBlob",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=lambda raw: raw,
    )
    try:
        future = write.future(messages(), timeout=30)
        error = future.exception(timeout=30)
    finally:
        released.set()
    assert isinstance(error, grpc.RpcError)
    assert error.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert "sent nothing for 1 s" in (error.details() or "")
    _assert_clients_fault(_events_until_rpc(service, "ContentStore/WriteBlob"), "DEADLINE_EXCEEDED")
    missing = channel.unary_unary(
        "/haz.remote.v1.ContentStore/FindMissingBlobs",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=cache_pb2.FindMissingBlobsResponse.FromString,
    )(cache_pb2.FindMissingBlobsRequest(hash_function=BLAKE3, digests=[first.digest]), timeout=30)
    assert list(missing.missing) == [first.digest]


def test_stream_idle_timeout_is_configurable_and_positive(tmp_path: Path) -> None:
    """``--stream-idle-timeout`` > ``HAZ_CACHE_STREAM_IDLE_TIMEOUT`` > file > 60 s; zero is a
    configuration error (a stream could never wait)."""
    assert resolve_config(flags={}, env={}).stream_idle_timeout == 60.0
    env = {"HAZ_CACHE_STREAM_IDLE_TIMEOUT": "2m"}
    assert resolve_config(flags={}, env=env).stream_idle_timeout == 120.0
    flags = {"stream_idle_timeout": "5s"}
    assert resolve_config(flags=flags, env=env).stream_idle_timeout == 5.0
    config = tmp_path / "cache.yaml"
    config.write_text("stream_idle_timeout: 0s\n")
    with pytest.raises(ServiceConfigError, match="stream_idle_timeout"):
        resolve_config(flags={"config": str(config)}, env={})
