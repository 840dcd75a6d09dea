"""Server memory under sustained hostile traffic (issue 13: RSS flat within ±10 %).

Starts a real ``haz-cache-service`` (file storage in a temp directory) and sends ``--requests``
(default 10,000) hostile requests, round robin over these kinds:

* a BatchUpdateBlobs of 20 zstd bombs (each frame declares 1 KiB and inflates to 16 MiB);
* undecodable protobuf bytes to FindMissingBlobs;
* a PutManifest whose JSON has a 5,000-digit integer;
* a socket that sends half the HTTP/2 preface and waits (closed by the client one sample
  window later; the server's handshake timeout closes it first);
* a ReadBlob of an 8 MiB blob that is never read, cancelled after the next few requests;
* a WriteBlob that sends 2 MiB of a 4 MiB blob and ends without ``finish``;
* an oversized BatchReadBlobs (one digest more than ``max_batch_items``).

Every 1,000 requests it samples the server's VmRSS (``/proc/PID/status``) twice: live (with
the unread streams of the moment open), then retained (those cancelled and
:data:`SETTLE_S` later, which is what a leak or fragmentation would grow). At the end, the
ratio of the final retained RSS to the retained RSS after the first 1,000 (the warm-up),
with the verdict ``flat`` when within ±10 %, and the peak live RSS.

Usage: ``.venv/bin/python bench/bench_hostile.py [--requests N]``
"""

from __future__ import annotations

import argparse
import contextlib
import random
import shutil
import socket
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc
import zstandard

from bench._svc_common import channel_options, start_cache_service, stop_all
from bench._util import work_dir
from hazremote.domain.digest import digest_bytes
from hazremote.domain.model import HashName
from hazremote.wire.haz.remote.v1 import cache_pb2, cache_pb2_grpc, digest_pb2

MIB = 1 << 20
SAMPLE_EVERY = 1000
FLAT = 0.10
#: Seconds between cancelling the open streams and sampling retained RSS (the service trims
#: its heap 1 s after streams end).
SETTLE_S = 2.0
BLAKE3 = digest_pb2.HASH_FUNCTION_BLAKE3
ZSTD = cache_pb2.COMPRESSION_ZSTD
HALF_PREFACE = b"PRI * HTTP/2.0\r\n"
#: Unread ReadBlob streams open at once (below the per-caller stream limit).
OPEN_READS = 16


def digest_of(data: bytes) -> digest_pb2.Digest:
    return digest_pb2.Digest(hash=digest_bytes(HashName.BLAKE3, data).raw, size_bytes=len(data))


def resident_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


class Hostile:
    """One client sending the hostile kinds in turn."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.channel = grpc.insecure_channel(address, options=channel_options())
        self.content = cache_pb2_grpc.ContentStoreStub(self.channel)
        self.manifests = cache_pb2_grpc.ManifestStoreStub(self.channel)
        self.raw_find = self.channel.unary_unary(
            "/haz.remote.v1.ContentStore/FindMissingBlobs",
            request_serializer=None,
            response_deserializer=None,
        )
        rng = random.Random(13)
        self.blobs = [rng.randbytes(8 * MIB) for _ in range(4)]
        for data in self.blobs:
            self._upload(data)
        bomb = zstandard.ZstdCompressor(level=19).compress(bytes(16 * MIB))
        declared = digest_of(bytes(1024))
        self.bombs = cache_pb2.BatchUpdateBlobsRequest(
            hash_function=BLAKE3,
            items=[
                cache_pb2.BatchUpdateBlobsRequest.Item(digest=declared, data=bomb, compression=ZSTD)
                for _ in range(20)
            ],
        )
        self.long_integer = cache_pb2.PutManifestRequest(
            namespace="main",
            hash_function=BLAKE3,
            key=bytes(32),
            manifest_json=b'{"chapter_revision": ' + b"9" * 5000 + b"}",
        )
        self.oversized = cache_pb2.BatchReadBlobsRequest(
            hash_function=BLAKE3, digests=[digest_of(bytes([i % 256])) for i in range(1001)]
        )
        self.reads: deque[grpc.Future] = deque()
        self.sockets: list[socket.socket] = []
        self.old_sockets: list[socket.socket] = []
        self.kinds: list[Callable[[int], None]] = [
            self.zstd_bombs,
            self.undecodable,
            self.over_long_integer,
            self.half_preface,
            self.unread_stream,
            self.unfinished_write,
            self.oversized_batch,
        ]

    def _upload(self, data: bytes) -> None:
        frame = zstandard.ZstdCompressor(level=3).compress(data)
        pieces = [frame[i : i + MIB] for i in range(0, len(frame), MIB)]
        messages = [cache_pb2.WriteBlobChunk(data=p) for p in pieces]
        messages[0].hash_function = BLAKE3
        messages[0].digest.CopyFrom(digest_of(data))
        messages[0].compression = ZSTD
        messages[-1].finish = True
        self.content.WriteBlob(iter(messages), timeout=60)

    def send(self, index: int) -> None:
        with contextlib.suppress(grpc.RpcError):
            self.kinds[index % len(self.kinds)](index)

    def zstd_bombs(self, index: int) -> None:
        self.content.BatchUpdateBlobs(self.bombs, timeout=30)

    def undecodable(self, index: int) -> None:
        self.raw_find(b"\xff\xff\xff\xff\x0f", timeout=30)

    def over_long_integer(self, index: int) -> None:
        self.manifests.PutManifest(self.long_integer, timeout=30)

    def half_preface(self, index: int) -> None:
        host, _, port = self.address.rpartition(":")
        try:
            sock = socket.create_connection((host, int(port)), timeout=10)
        except OSError:
            return
        with contextlib.suppress(OSError):
            sock.sendall(HALF_PREFACE)
        self.sockets.append(sock)

    def unread_stream(self, index: int) -> None:
        data = self.blobs[index % len(self.blobs)]
        call = self.content.ReadBlob(
            cache_pb2.ReadBlobRequest(
                hash_function=BLAKE3, digest=digest_of(data), accepted_compressions=[ZSTD]
            )
        )
        self.reads.append(call)
        while len(self.reads) > OPEN_READS:
            self.reads.popleft().cancel()

    def unfinished_write(self, index: int) -> None:
        data = random.Random(index).randbytes(2 * MIB)
        first = cache_pb2.WriteBlobChunk(
            hash_function=BLAKE3,
            digest=digest_pb2.Digest(hash=bytes(32), size_bytes=4 * MIB),
            data=data[:MIB],
        )
        self.content.WriteBlob(iter([first, cache_pb2.WriteBlobChunk(data=data[MIB:])]), timeout=30)

    def oversized_batch(self, index: int) -> None:
        self.content.BatchReadBlobs(self.oversized, timeout=30)

    def new_window(self) -> None:
        """Close the sockets of the window before last (the server closed them already)."""
        for sock in self.old_sockets:
            sock.close()
        self.old_sockets, self.sockets = self.sockets, []

    def cancel_reads(self) -> None:
        while self.reads:
            self.reads.popleft().cancel()

    def close(self) -> None:
        self.cancel_reads()
        for sock in (*self.old_sockets, *self.sockets):
            sock.close()
        self.channel.close()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=10_000, metavar="N")
    args = parser.parse_args(argv)
    work = work_dir("hostile")
    started = time.perf_counter()
    try:
        server = start_cache_service(
            "--log-level", "warning", storage=str(work / "store"), log=work / "service.log"
        )
        client = Hostile(server.address)
        print(
            f"hostile traffic: {args.requests} requests, {len(client.kinds)} kinds, "
            f"server pid {server.pid}; start RSS {resident_mib(server.pid):.0f} MiB",
            flush=True,
        )
        samples: list[tuple[int, float]] = []
        peak = 0.0
        for index in range(args.requests):
            client.send(index)
            if (index + 1) % SAMPLE_EVERY == 0 or index + 1 == args.requests:
                live = resident_mib(server.pid)
                peak = max(peak, live)
                client.cancel_reads()
                time.sleep(SETTLE_S)
                retained = resident_mib(server.pid)
                samples.append((index + 1, retained))
                elapsed = time.perf_counter() - started
                print(
                    f"  {index + 1:>6} requests  RSS live {live:7.1f} MiB, retained "
                    f"{retained:7.1f} MiB  ({elapsed:.0f} s)",
                    flush=True,
                )
                client.new_window()
        client.close()
        warm = samples[0][1]
        final = samples[-1][1]
        ratio = final / warm
        verdict = "flat" if abs(ratio - 1) <= FLAT else "NOT flat"
        print(
            f"retained RSS, final / after warm-up ({samples[0][0]} requests): {final:.1f} / "
            f"{warm:.1f} MiB = {ratio:.3f} → {verdict} (±{FLAT:.0%}); peak live {peak:.1f} MiB"
        )
        print(f"server alive: {server.process.poll() is None}")
    finally:
        stop_all()
        shutil.rmtree(work, ignore_errors=True)
    print(f"total {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
