"""ReadBlob streams that nobody reads hold bounded memory and give it back (issue 13, item 6).

Spec coverage:
* Issue 13, item 6 — read-ahead of all streams together is bounded (``READ_AHEAD_BUDGET``);
  what a stream holds is released when its client cancels, and the service gives freed heap
  back to the OS; an honest reader gets its blob meanwhile and after.
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import grpc
import pytest

from cache_service.servicers.stream_bridges import READ_AHEAD_BUDGET
from hazremote.wire.haz.remote.v1 import cache_pb2, cache_pb2_grpc
from tests.cache_service.server.serverkit import BLAKE3, ZSTD, digest_of, write_chunks
from tests.cache_service.server.test_command import Service

MIB = 1 << 20
BLOB_SIZE = 8 * MIB
UNREAD_STREAMS = 48
#: What one unread stream may hold, from the design: the zstd window its read verifier keeps
#: (2 MiB for these level-3 frames) and three 1 MiB chunks (the message gRPC is sending, as
#: Python bytes and as gRPC's copy, and the one being verified); read-ahead is the budget's.
PER_STREAM = 2 * MIB + 3 * MIB
#: Allocator and gRPC overhead of that many streams and calls.
SLACK = 64 * MIB
#: Resident memory over the baseline still allowed once every stream is cancelled.
RELEASED_TO = 128 * MIB
#: Bounded waits (seconds): the server settles, or gives memory back.
SETTLE_S = 30.0


def resident(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def read_whole(channel: grpc.Channel, data: bytes) -> bytes:
    stub = cache_pb2_grpc.ContentStoreStub(channel)
    request = cache_pb2.ReadBlobRequest(hash_function=BLAKE3, digest=digest_of(data))
    return b"".join(chunk.data for chunk in stub.ReadBlob(request, timeout=60))


def wait_until_below(pid: int, limit: int) -> int:
    """Resident memory once it is at most ``limit``, or after :data:`SETTLE_S` (bounded)."""
    deadline = time.monotonic() + SETTLE_S
    while (now := resident(pid)) > limit and time.monotonic() < deadline:
        time.sleep(0.5)
    return now


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="Linux /proc only")
def test_unread_read_streams_hold_bounded_memory_and_release_it(tmp_path: Path) -> None:
    """48 ReadBlob streams of 8 MiB blobs whose client never reads: the service grows by at
    most 48 streams' design bound plus the read-ahead budget, gives the memory back once they
    are cancelled, and serves an honest reader meanwhile and after."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAZ_CACHE_")}
    service = Service("--listen", "127.0.0.1:0", "--storage", str(tmp_path / "store"), env=env)
    options = [("grpc.max_receive_message_length", 64 * MIB)]
    try:
        address = service.wait_for("listening on ").removeprefix("listening on ")
        pid = service.proc.pid
        rng = random.Random(13)
        blobs = [rng.randbytes(BLOB_SIZE) for _ in range(4)]
        with grpc.insecure_channel(address, options=options) as honest:
            uploads = cache_pb2_grpc.ContentStoreStub(honest)
            for data in blobs:
                uploads.WriteBlob(iter(write_chunks(data, compression=ZSTD, chunk=MIB)))
            assert read_whole(honest, blobs[0]) == blobs[0]
            baseline = resident(pid)

            # One connection per stream, as separate clients would: each has its own window.
            channels = [grpc.insecure_channel(address) for _ in range(UNREAD_STREAMS)]
            try:
                calls = [
                    cache_pb2_grpc.ContentStoreStub(channel).ReadBlob(
                        cache_pb2.ReadBlobRequest(
                            hash_function=BLAKE3,
                            digest=digest_of(blobs[i % len(blobs)]),
                            accepted_compressions=[ZSTD],
                        )
                    )
                    for i, channel in enumerate(channels)
                ]
                for call in calls:  # started: the server sent the first message
                    assert call.initial_metadata() is not None
                assert read_whole(honest, blobs[1]) == blobs[1]
                time.sleep(2)  # bounded: let each stream fill what it may hold
                grown = resident(pid) - baseline
                bound = UNREAD_STREAMS * PER_STREAM + READ_AHEAD_BUDGET + SLACK
                assert grown < bound, f"{grown / MIB:.0f} MiB held, bound {bound / MIB:.0f}"
                for call in calls:
                    call.cancel()
            finally:
                for channel in channels:
                    channel.close()
            left = wait_until_below(pid, baseline + RELEASED_TO) - baseline
            assert left <= RELEASED_TO, f"{left / MIB:.0f} MiB still held after cancel"
            assert read_whole(honest, blobs[2]) == blobs[2]
    finally:
        service.proc.send_signal(signal.SIGTERM)
        service.proc.wait(timeout=30)
