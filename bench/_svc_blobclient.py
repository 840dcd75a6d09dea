"""Blob client of ``bench_cache_service``, run as its own process so its peak RSS is its own.

Spec coverage: none (benchmark support). Per repetition (a new random blob, seed = repetition
number) it times WriteBlob of identity chunks, ReadBlob accepting zstd, ReadBlob accepting
identity only, WriteBlob of the same blob as a zstd frame of raw blocks, then the same bytes
over the raw echo server's Upload and Download streams. Prints one JSON object: seconds per
phase per repetition and ``ru_maxrss``.

Usage: ``_svc_blobclient.py SERVICE ECHO SIZE REPS STORE_ROOT``
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import cast

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
from hazremote.domain.digest import Digest, new_hasher
from hazremote.domain.model import HashName
from hazremote.wire.haz.remote.v1 import cache_pb2, digest_pb2

BLAKE3 = digest_pb2.HASH_FUNCTION_BLAKE3


WRITE_BLOB = "/haz.remote.v1.ContentStore/WriteBlob"
READ_BLOB = "/haz.remote.v1.ContentStore/ReadBlob"
#: WriteBlobChunk keys: field 4 ``data`` (length-delimited), field 5 ``finish`` (varint) = 1.
_DATA_KEY = b"\x22"
_FINISH = b"\x28\x01"


def _raw(data: bytes) -> bytes:
    return data


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if not value:
            out.append(low)
            return bytes(out)
        out.append(low | 0x80)


def write_messages(pool: bytes, size: int, digest: Digest) -> Iterator[bytes]:
    """The encoded WriteBlobChunk messages of a blob: byte for byte what protobuf would
    serialize (fields in number order), built with one copy of each chunk instead of two
    (message, then serialization), as the raw baseline's client pays none."""
    head = cache_pb2.WriteBlobChunk(
        hash_function=BLAKE3,
        digest=digest_pb2.Digest(hash=digest.raw, size_bytes=size),
        compression=cache_pb2.COMPRESSION_IDENTITY,
    ).SerializeToString()
    sent = 0
    # Pieces are views of the pool: the join below is the one copy (the raw client's is the
    # slice it sends).
    for piece in blob_chunks(cast(bytes, memoryview(pool)), size):
        sent += len(piece)
        finish = _FINISH if sent == size else b""
        yield b"".join((head, _DATA_KEY, _varint(len(piece)), piece, finish))
        head = b""


#: A raw-block zstd frame (RFC 8878): magic, descriptor (4-byte content size, no checksum),
#: a 2 MiB window (what level 3 declares), blocks of at most 128 KiB.
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_RAW_BLOCK = 128 * 1024


def write_zstd_messages(pool: bytes, size: int, digest: Digest) -> Iterator[bytes]:
    """The encoded WriteBlobChunk messages of the blob as one zstd frame of raw blocks, what
    the haz client sends for incompressible output (it stores outputs as zstd frames and
    uploads them as they are): each message holds the blocks of one 1 MiB piece with their
    3-byte headers (the first also the frame header), built with one copy as above."""
    head = cache_pb2.WriteBlobChunk(
        hash_function=BLAKE3,
        digest=digest_pb2.Digest(hash=digest.raw, size_bytes=size),
        compression=cache_pb2.COMPRESSION_ZSTD,
    ).SerializeToString()
    frame_header = _ZSTD_MAGIC + bytes((0x80, (21 - 10) << 3)) + size.to_bytes(4, "little")
    sent = 0
    for piece in blob_chunks(cast(bytes, memoryview(pool)), size):
        parts: list[bytes | memoryview] = [frame_header] if not sent else []
        view = memoryview(piece)
        for start in range(0, len(view), _RAW_BLOCK):
            block = view[start : start + _RAW_BLOCK]
            sent += len(block)
            parts.append(((len(block) << 3) | (sent == size)).to_bytes(3, "little"))
            parts.append(block)
        data_length = sum(len(part) for part in parts)
        finish = _FINISH if sent == size else b""
        yield b"".join((head, _DATA_KEY, _varint(data_length), *parts, finish))
        head = b""


async def _write_chunks(pool: bytes, size: int, digest: Digest) -> AsyncIterator[bytes]:
    for message in write_messages(pool, size, digest):
        yield message


async def _write_zstd_chunks(pool: bytes, size: int, digest: Digest) -> AsyncIterator[bytes]:
    for message in write_zstd_messages(pool, size, digest):
        yield message


def data_length(message: bytes) -> int:
    """The length of a ReadBlobChunk's ``data`` (field 2), read from its encoding without
    copying the bytes out (the raw baseline's client does not copy them either)."""
    view = memoryview(message)
    pos = 0
    length = 0
    while pos < len(view):
        key, pos = _read_varint(view, pos)
        field, kind = key >> 3, key & 7
        if kind == 0:
            _, pos = _read_varint(view, pos)
        elif kind == 2:
            size, pos = _read_varint(view, pos)
            if field == 2:
                length = size
            pos += size
        else:
            raise ValueError(f"unexpected wire type {kind} in ReadBlobChunk")
    return length


def _read_varint(view: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = view[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


async def _raw_chunks(pool: bytes, size: int) -> AsyncIterator[bytes]:
    for piece in blob_chunks(pool, size):
        yield piece


async def run(service: str, echo: str, size: int, reps: int, store_root: Path) -> dict[str, object]:
    samples: dict[str, list[float]] = {
        "write": [],
        "write_zstd": [],
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
        write_blob = svc.stream_unary(
            WRITE_BLOB,
            request_serializer=_raw,
            response_deserializer=cache_pb2.WriteBlobResponse.FromString,
        )
        read_blob = svc.unary_stream(
            READ_BLOB,
            request_serializer=cache_pb2.ReadBlobRequest.SerializeToString,
            response_deserializer=data_length,
        )
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
            reply = await write_blob(_write_chunks(pool, size, digest))
            samples["write"].append(time.perf_counter() - start)
            assert reply.committed_size_bytes == size, reply

            for name, accepted in (
                ("read_zstd", [cache_pb2.COMPRESSION_ZSTD, cache_pb2.COMPRESSION_IDENTITY]),
                ("read_identity", [cache_pb2.COMPRESSION_IDENTITY]),
            ):
                start = time.perf_counter()
                got = 0
                async for length in read_blob(
                    cache_pb2.ReadBlobRequest(
                        hash_function=BLAKE3, digest=wire_digest, accepted_compressions=accepted
                    )
                ):
                    got += length
                samples[name].append(time.perf_counter() - start)
                if name == "read_identity":
                    assert got == size, (got, size)

            # The same blob again, uploaded as the haz client does (a zstd frame).
            ref = BlobRef(hash_name=HashName.BLAKE3, digest=digest, size=size)
            (store_root / blob_name(ref)).unlink()
            start = time.perf_counter()
            reply = await write_blob(_write_zstd_chunks(pool, size, digest))
            samples["write_zstd"].append(time.perf_counter() - start)
            assert reply.committed_size_bytes == size, reply

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
