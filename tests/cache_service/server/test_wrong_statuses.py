"""Issue 13 item 8: requests that are the client's fault end in the status that says so, and
are logged as the client's fault (never as an ``internal error``), on a real
``haz-cache-service`` process over loopback.

Spec coverage:
* SVC-006 — a bad request is ``INVALID_ARGUMENT``; ``INTERNAL`` only for the server's own
  faults (an over-long JSON integer, undecodable protobuf bytes).
* CACHE-011 — the strict manifest parser reports an over-long integer as a ManifestError.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from tests.cache_service.server.serverkit import make_manifest, put_request
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
