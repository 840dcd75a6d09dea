"""Blob client of ``bench_cache_service``, run as its own process so its peak RSS is its own.

Spec coverage: none (benchmark support). For each repetition (a new random blob, seed =
repetition number): WriteBlob of identity chunks, ReadBlob accepting zstd (the stored frame is
passed through, as the haz client asks), ReadBlob accepting identity only (the server
decompresses), then the same bytes over the raw echo server's Upload and Download streams.
The client neither hashes nor decompresses what it downloads (neither does the raw baseline).
Prints one JSON object: seconds per phase per repetition and ``ru_maxrss``.

Usage: ``_svc_blobclient.py SERVICE ECHO SIZE REPS STORE_ROOT``
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc

from bench._svc_common import (
    CHUNK,
    ECHO_DOWNLOAD,
    ECHO_UPLOAD,
    blob_chunks,
    blob_pool,
    channel_options,
)
from cache_service.storage._layout import blob_name
from cache_service.storage.base import BlobRef
from hazremote._proto.haz.remote.v1 import cache_pb2, cache_pb2_grpc, digest_pb2
from hazremote.domain.digest import Digest, new_hasher
from hazremote.domain.model import HashName

BLAKE3 = digest_pb2.HASH_FUNCTION_BLAKE3


def _raw(data: bytes) -> bytes:
    return data


async def _write_chunks(
    pool: bytes, size: int, digest: Digest
) -> AsyncIterator[cache_pb2.WriteBlobChunk]:
    first = True
    sent = 0
    for piece in blob_chunks(pool, size):
        sent += len(piece)
        message = cache_pb2.WriteBlobChunk(data=piece, finish=sent == size)
        if first:
            message.hash_function = BLAKE3
            message.digest.hash = digest.raw
            message.digest.size_bytes = size
            message.compression = cache_pb2.COMPRESSION_IDENTITY
            first = False
        yield message


async def _raw_chunks(pool: bytes, size: int) -> AsyncIterator[bytes]:
    for piece in blob_chunks(pool, size):
        yield piece


async def run(service: str, echo: str, size: int, reps: int, store_root: Path) -> dict[str, object]:
    samples: dict[str, list[float]] = {
        "write": [],
        "read_zstd": [],
        "read_identity": [],
        "raw_up": [],
        "raw_down": [],
    }
    options = channel_options()
    async with (
        grpc.aio.insecure_channel(service, options=options) as svc,
        grpc.aio.insecure_channel(echo, options=options) as raw,
    ):
        content = cache_pb2_grpc.ContentStoreStub(svc)
        upload = raw.stream_unary(ECHO_UPLOAD, request_serializer=_raw, response_deserializer=_raw)
        download = raw.unary_stream(
            ECHO_DOWNLOAD, request_serializer=_raw, response_deserializer=_raw
        )
        for rep in range(1, reps + 1):
            pool = blob_pool(rep)
            hasher = new_hasher(HashName.BLAKE3)
            for piece in blob_chunks(pool, size):
                hasher.update(piece)
            digest = Digest(hasher.digest())
            wire_digest = digest_pb2.Digest(hash=digest.raw, size_bytes=size)

            start = time.perf_counter()
            reply = await content.WriteBlob(_write_chunks(pool, size, digest))
            samples["write"].append(time.perf_counter() - start)
            assert reply.committed_size_bytes == size, reply

            for name, accepted in (
                ("read_zstd", [cache_pb2.COMPRESSION_ZSTD, cache_pb2.COMPRESSION_IDENTITY]),
                ("read_identity", [cache_pb2.COMPRESSION_IDENTITY]),
            ):
                start = time.perf_counter()
                got = 0
                async for chunk in content.ReadBlob(
                    cache_pb2.ReadBlobRequest(
                        hash_function=BLAKE3, digest=wire_digest, accepted_compressions=accepted
                    )
                ):
                    got += len(chunk.data)
                samples[name].append(time.perf_counter() - start)
                if name == "read_identity":
                    assert got == size, (got, size)

            async for _ in download(f"{rep},0,{CHUNK}".encode()):
                pass  # the echo server builds its pool for this seed before the clock runs
            start = time.perf_counter()
            echoed = await upload(_raw_chunks(pool, size))
            samples["raw_up"].append(time.perf_counter() - start)
            assert int(echoed) == size

            start = time.perf_counter()
            got = 0
            async for piece in download(f"{rep},{size},{CHUNK}".encode()):
                got += len(piece)
            samples["raw_down"].append(time.perf_counter() - start)
            assert got == size

            # Keep the disk bounded: the next repetition stores a new blob.
            ref = BlobRef(hash_name=HashName.BLAKE3, digest=digest, size=size)
            (store_root / blob_name(ref)).unlink()
            del pool
    return {"samples": samples, "client_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF)[2]}


def main(argv: list[str]) -> int:
    service, echo, size, reps, root = argv
    result = asyncio.run(run(service, echo, int(size), int(reps), Path(root)))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
