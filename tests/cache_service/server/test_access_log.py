"""SVC-004: the access event the service renders itself (issue 5) is the line structlog's JSON
chain would print, goes out in order with the other events (within milliseconds, and at
exit), and falls back to structlog whenever that chain is not the one running."""

from __future__ import annotations

import asyncio
import datetime
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog

from cache_service.access_log import AccessLog
from hazremote import logs
from hazremote.logs import configure_logging, get_logger, utc_timestamp

#: Fields of access events with everything JSON must escape or format: quotes, backslashes,
#: non-ASCII, control characters, IPv6 peers, whole and fractional durations.
EVENTS: list[dict[str, Any]] = [
    {
        "method": "ManifestStore/GetManifest",
        "code": "OK",
        "duration_ms": 0.123,
        "bytes_in": 41,
        "bytes_out": 2181,
        "namespace": "main",
        "peer": "ipv4:127.0.0.1:54321",
        "identity": "anonymous",
    },
    {
        "method": "ContentStore/WriteBlob",
        "code": "PERMISSION_DENIED",
        "duration_ms": 1.0,
        "bytes_in": 0,
        "bytes_out": 0,
        "namespace": 'pr-"1"\\x',
        "peer": "ipv6:[::1]:50051",
        "identity": "zoë\t\u2603\U0001f600",
    },
    {
        "method": "ManifestStore/PutManifest",
        "code": "UNAVAILABLE",
        "duration_ms": 12345.678,
        "bytes_in": 1 << 40,
        "bytes_out": 7,
        "namespace": "",
        "peer": "unix:/tmp/x\n",
        "identity": "ci-main",
    },
]
TIMESTAMP = re.compile(r'"timestamp": "(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z)"')


@pytest.fixture
def stderr_lines(capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[[], list[str]]]:
    """JSON logging at info (the service's default) into the captured stderr; the lines
    printed so far. The logging configuration is restored afterwards."""

    def printed() -> list[str]:
        return capsys.readouterr().err.splitlines()

    configure_logging(level="info", fmt="json")
    try:
        yield printed
    finally:
        configure_logging()


def test_rendered_event_is_the_line_structlog_prints(
    stderr_lines: Callable[[], list[str]],
) -> None:
    """Byte for byte what the JSON chain prints (key order, separators, escaping, number
    formats); only the timestamps differ, both in the chain's ISO format."""
    access = AccessLog("cache_service.access")
    chain = get_logger("cache_service.access")
    for fields in EVENTS:
        access.rpc(**fields)  # outside an event loop: printed at once
        chain.info("rpc", **fields)
        ours, theirs = stderr_lines()
        assert TIMESTAMP.search(ours)
        assert TIMESTAMP.search(theirs)
        assert TIMESTAMP.sub("T", ours) == TIMESTAMP.sub("T", theirs)
        assert json.loads(ours) | {"timestamp": "T"} == {
            **fields,
            "event": "rpc",
            "level": "info",
            "timestamp": "T",
        }


@pytest.mark.parametrize(
    "time_ns",
    [
        0,
        1_700_000_000_000_000_000,  # a whole second: no fraction, like datetime.isoformat()
        1_700_000_000_000_000_999,  # below a microsecond: still whole
        1_700_000_000_000_001_000,
        1_700_000_000_123_456_789,  # truncated to the microsecond, like datetime.now()
        1_700_000_059_999_999_999,
        4_102_444_800_500_000_000,  # 2100-01-01
    ],
)
def test_utc_timestamp_is_the_time_stamper_format(time_ns: int) -> None:
    expected = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC) + datetime.timedelta(
        microseconds=time_ns // 1000
    )
    assert utc_timestamp(time_ns) == expected.isoformat().replace("+00:00", "Z")


def test_deferred_events_keep_their_order_and_go_out_within_milliseconds(
    stderr_lines: Callable[[], list[str]],
) -> None:
    """On the event loop access events are written in batches: before any later event, and
    within ``DEFER_SECONDS`` without one."""
    access = AccessLog("cache_service.access")
    other = get_logger("cache_service.errors")

    async def serve() -> tuple[list[str], list[str]]:
        access.rpc(**(EVENTS[0] | {"bytes_in": 1}))
        access.rpc(**(EVENTS[0] | {"bytes_in": 2}))
        other.warning("storage error", kind="StorageError")
        access.rpc(**(EVENTS[0] | {"bytes_in": 3}))
        first = stderr_lines()
        await asyncio.sleep(logs.DEFER_SECONDS * 4)
        return first, stderr_lines()

    first, later = asyncio.run(serve())
    events = [json.loads(line) for line in first + later]
    assert [(e["event"], e.get("bytes_in")) for e in events] == [
        ("rpc", 1),
        ("rpc", 2),
        ("storage error", None),
        ("rpc", 3),
    ]
    assert len(first) == 3, "the third access event waits for its batch"
    assert len(later) == 1


def test_a_batch_left_by_a_closed_loop_goes_out_with_the_next(
    stderr_lines: Callable[[], list[str]],
) -> None:
    """A loop that closed before its batch was due does not hold back later batches."""
    access = AccessLog("cache_service.access")

    async def log(n: int, wait: float) -> None:
        access.rpc(**(EVENTS[0] | {"bytes_in": n}))
        await asyncio.sleep(wait)

    asyncio.run(log(1, 0))
    time.sleep(logs.DEFER_SECONDS * 2)
    asyncio.run(log(2, logs.DEFER_SECONDS * 4))
    assert [json.loads(line)["bytes_in"] for line in stderr_lines()] == [1, 2]


def test_a_full_batch_is_written_at_once(stderr_lines: Callable[[], list[str]]) -> None:
    access = AccessLog("cache_service.access")

    async def serve() -> list[str]:
        for n in range(logs.DEFER_LINES):
            access.rpc(**(EVENTS[0] | {"bytes_in": n}))
        return stderr_lines()

    lines = asyncio.run(serve())
    assert [json.loads(line)["bytes_in"] for line in lines] == list(range(logs.DEFER_LINES))


def test_deferred_events_are_written_at_exit() -> None:
    """A process that ends with access events still in a batch (its loop closed before the
    batch was due) prints them."""
    script = """
import asyncio
from cache_service.access_log import AccessLog
from hazremote.logs import configure_logging
configure_logging(level="info", fmt="json")
async def main():
    AccessLog("cache_service.access").rpc(
        method="M/N", code="OK", duration_ms=0.5, bytes_in=1, bytes_out=2,
        namespace="main", peer="ipv4:1.2.3.4:5", identity="anonymous",
    )
asyncio.run(main())
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    [line] = result.stderr.splitlines()
    assert json.loads(line)["method"] == "M/N"


def test_console_format_goes_through_structlog(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(level="info", fmt="console")
    try:
        AccessLog("cache_service.access").rpc(**EVENTS[0])
        [line] = capsys.readouterr().err.splitlines()
    finally:
        configure_logging()
    assert line.startswith("haz: info: rpc [bytes_in=41 bytes_out=2181 code=OK ")


def test_filtered_level_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(level="warning", fmt="json")
    try:
        AccessLog("cache_service.access").rpc(**EVENTS[0])
        assert capsys.readouterr().err == ""
    finally:
        configure_logging()


def test_captured_logs_see_the_access_event(stderr_lines: Callable[[], list[str]]) -> None:
    """Inside ``structlog.testing.capture_logs`` (which edits the running chain) the event
    goes through structlog, so it is captured with its fields, not printed."""
    get_logger("cache_service.access").info("warm up")  # the chain is configured and running
    stderr_lines()
    with structlog.testing.capture_logs() as captured:
        AccessLog("cache_service.access").rpc(**EVENTS[1])
    assert captured == [{**EVENTS[1], "event": "rpc", "log_level": "info"}]
    assert stderr_lines() == []
