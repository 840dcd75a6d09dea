"""WriteBlob/ReadBlob over real gRPC on disk storage: the stored form of identity uploads, and
nothing visible after a failed or abandoned stream while chunks are received ahead of the
store and read ahead of the sender (RC-004, RC-006, SVC-006, §6).
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import zstandard

from cache_service.servicers.stream_bridges import RECEIVE_AHEAD
from hazremote.wire.haz.remote.v1 import cache_pb2, cache_pb2_grpc
from tests.cache_service.server.serverkit import (
    BLAKE3,
    IDENTITY,
    TEST_LIMITS,
    ZSTD,
    ServerThread,
    digest_of,
    running_server,
    server_config,
    unzstd,
    write_chunks,
)

CHUNK = 64 << 10
#: Several times the receive-ahead depth, so the store runs behind the receiver.
BLOB = 3 * RECEIVE_AHEAD * CHUNK + 12_345
#: Raw zstd frame overhead: frame header (magic, descriptor, window, 4-byte size) + 3 bytes
#: per block of at most 128 KiB.
RAW_HEADER = 4 + 1 + 1 + 4


@dataclasses.dataclass
class DiskServer:
    """A running server over the real disk store at ``root``."""

    server: ServerThread
    root: Path

    def content(self) -> cache_pb2_grpc.ContentStoreStub:
        return self.server.content()


@pytest.fixture
def disk_server(tmp_path: Path) -> Iterator[DiskServer]:
    limits = dataclasses.replace(TEST_LIMITS, max_blob_size=64 << 20)
    root = tmp_path / "store"
    with running_server(server_config(storage=str(root), limits=limits), config_storage=True) as s:
        yield DiskServer(server=s, root=root)


def _files(disk: DiskServer) -> list[Path]:
    return sorted(p for p in disk.root.rglob("*") if p.is_file())


def _stored(disk: DiskServer, data: bytes) -> bytes:
    """The bytes the disk store holds for ``data`` (SVC-002 name)."""
    hexd = digest_of(data).hash.hex()
    return (disk.root / f"v1/cas/blake3/{hexd[:2]}/{hexd}-{len(data)}").read_bytes()


def _read(
    server: ServerThread | DiskServer, data: bytes, accept: tuple[cache_pb2.Compression, ...]
) -> tuple[int, bytes]:
    chunks = list(
        server.content().ReadBlob(
            cache_pb2.ReadBlobRequest(
                hash_function=BLAKE3, digest=digest_of(data), accepted_compressions=accept
            )
        )
    )
    return chunks[0].compression, b"".join(c.data for c in chunks)


def _absent(server: ServerThread | DiskServer, data: bytes) -> bool:
    reply = server.content().FindMissingBlobs(
        cache_pb2.FindMissingBlobsRequest(hash_function=BLAKE3, digests=[digest_of(data)])
    )
    return [d.hash for d in reply.missing] == [digest_of(data).hash]


def _wait_for_no_files(server: DiskServer, timeout_s: float = 10.0) -> list[Path]:
    """The files under the store once its storage thread has cleaned up (it may lag the reply
    to a cancelled call)."""
    deadline = time.monotonic() + timeout_s
    while (files := _files(server)) and time.monotonic() < deadline:
        time.sleep(0.02)
    return files


def test_incompressible_identity_upload_is_stored_as_one_frame_of_raw_blocks(
    disk_server: DiskServer,
) -> None:
    """RC-006: random bytes (the trial on the first 64 KiB saves nothing) are stored as one
    zstd frame of raw blocks recording the content size; both encodings read back."""
    data = os.urandom(BLOB)
    reply = disk_server.content().WriteBlob(iter(write_chunks(data, chunk=CHUNK)))
    assert reply.committed_size_bytes == len(data)
    stored = _stored(disk_server, data)
    blocks = -(-len(data) // CHUNK)  # one raw block per 64 KiB message
    assert len(stored) == RAW_HEADER + 3 * blocks + len(data)
    assert zstandard.get_frame_parameters(stored).content_size == len(data)
    assert zstandard.ZstdDecompressor().decompress(stored) == data
    assert _read(disk_server, data, accept=(ZSTD,)) == (ZSTD, stored)
    assert _read(disk_server, data, accept=()) == (IDENTITY, data)


def test_compressible_identity_upload_is_stored_compressed(disk_server: DiskServer) -> None:
    """RC-006: bytes zstd shrinks are stored compressed at level 3, as before."""
    data = (b"build output line, " * 40_000)[:BLOB]
    disk_server.content().WriteBlob(iter(write_chunks(data, chunk=CHUNK)))
    stored = _stored(disk_server, data)
    assert len(stored) < len(data) // 10
    assert zstandard.get_frame_parameters(stored).content_size == len(data)
    assert _read(disk_server, data, accept=()) == (IDENTITY, data)


def test_raw_stored_blob_reads_from_an_offset(disk_server: DiskServer) -> None:
    """A raw-block frame decodes from any offset, in both encodings."""
    data = os.urandom(BLOB)
    disk_server.content().WriteBlob(iter(write_chunks(data, chunk=CHUNK)))
    offset = 200_001
    for accept, expected in (((), IDENTITY), ((ZSTD,), ZSTD)):
        chunks = list(
            disk_server.content().ReadBlob(
                cache_pb2.ReadBlobRequest(
                    hash_function=BLAKE3,
                    digest=digest_of(data),
                    offset=offset,
                    accepted_compressions=accept,
                )
            )
        )
        assert chunks[0].compression == expected
        body = b"".join(c.data for c in chunks)
        assert (unzstd(body) if expected == ZSTD else body) == data[offset:]


@pytest.mark.parametrize("where", ["first", "last"])
def test_digest_mismatch_in_a_received_ahead_chunk_leaves_nothing(
    disk_server: DiskServer, where: str
) -> None:
    """RC-004: a wrong chunk, first (decides raw storage) or last (received while earlier
    chunks are being stored) → INVALID_ARGUMENT; no blob, no temp file."""
    data = os.urandom(BLOB)
    messages = write_chunks(data, chunk=CHUNK)
    bad = messages[0 if where == "first" else -1]
    bad.data = os.urandom(len(bad.data))
    with pytest.raises(grpc.RpcError) as caught:
        disk_server.content().WriteBlob(iter(messages))
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert _absent(disk_server, data)
    assert _wait_for_no_files(disk_server) == []


@pytest.mark.parametrize("extra", [-1, 1])
def test_size_mismatch_of_a_raw_stored_upload_leaves_nothing(
    disk_server: DiskServer, extra: int
) -> None:
    """RC-004: a blob of random bytes one byte shorter or longer than declared is refused."""
    data = os.urandom(BLOB)
    sent = data[:extra] if extra < 0 else data + b"x"
    messages = write_chunks(sent, chunk=CHUNK)
    messages[0].digest.CopyFrom(digest_of(data))
    with pytest.raises(grpc.RpcError) as caught:
        disk_server.content().WriteBlob(iter(messages))
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert _absent(disk_server, data)
    assert _wait_for_no_files(disk_server) == []


def test_write_cancelled_with_chunks_received_ahead_leaves_nothing(
    disk_server: DiskServer,
) -> None:
    """§6: a client that cancels after sending more than the receive-ahead depth leaves no
    blob and no temp file; the server then serves the same blob normally."""
    data = os.urandom(BLOB)
    messages = write_chunks(data, chunk=CHUNK)
    sent = threading.Event()
    release = threading.Event()

    def requests() -> Iterator[cache_pb2.WriteBlobChunk]:
        yield from messages[: 2 * RECEIVE_AHEAD]
        sent.set()
        release.wait(10)

    future = disk_server.content().WriteBlob.future(requests())
    assert sent.wait(10)
    time.sleep(0.1)  # let the server receive and store what was sent
    future.cancel()
    release.set()
    with pytest.raises(grpc.FutureCancelledError):
        future.result()
    assert _wait_for_no_files(disk_server) == []
    assert _absent(disk_server, data)
    disk_server.content().WriteBlob(iter(messages))
    assert _read(disk_server, data, accept=()) == (IDENTITY, data)


def test_write_stream_broken_before_finish_leaves_nothing(disk_server: DiskServer) -> None:
    """A stream that ends, after several chunks, without its finish chunk publishes nothing."""
    data = os.urandom(BLOB)
    with pytest.raises(grpc.RpcError) as caught:
        disk_server.content().WriteBlob(iter(write_chunks(data, chunk=CHUNK, finish=False)))
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert _absent(disk_server, data)
    assert _wait_for_no_files(disk_server) == []


def test_cancelled_read_releases_its_stream_slot(tmp_path: Path) -> None:
    """SVC-006: a ReadBlob abandoned while a chunk is read ahead gives its slot back."""
    limits = dataclasses.replace(TEST_LIMITS, max_concurrent_streams=1, max_blob_size=64 << 20)
    config = server_config(storage=str(tmp_path / "store"), limits=limits)
    with running_server(config, config_storage=True) as server:
        data = os.urandom(24 << 20)  # larger than any HTTP/2 window
        server.content().WriteBlob(iter(write_chunks(data, chunk=512 << 10)))
        request = cache_pb2.ReadBlobRequest(hash_function=BLAKE3, digest=digest_of(data))
        holder = server.content().ReadBlob(request)
        next(holder)
        holder.cancel()
        deadline = time.monotonic() + 10
        while True:
            try:
                body = b"".join(c.data for c in server.content().ReadBlob(request))
                break
            except grpc.RpcError as exc:
                if exc.code() is not grpc.StatusCode.RESOURCE_EXHAUSTED:
                    raise
                assert time.monotonic() < deadline, "the cancelled read kept its slot"
                time.sleep(0.05)
        assert body == data


def test_empty_and_small_identity_uploads_are_compressed_frames(
    disk_server: DiskServer,
) -> None:
    """Blobs under the 64 KiB trial size keep the compressed frame (no trial)."""
    for data in (b"", os.urandom(1000)):
        disk_server.content().WriteBlob(iter(write_chunks(data)))
        stored = _stored(disk_server, data)
        assert zstandard.ZstdDecompressor().decompressobj().decompress(stored) == data
        assert _read(disk_server, data, accept=()) == (IDENTITY, data)


@pytest.mark.parametrize("accept", [(ZSTD,), ()])
def test_corruption_found_while_reading_ahead_is_data_loss_and_deleted(
    disk_server: DiskServer, accept: tuple[cache_pb2.Compression, ...]
) -> None:
    """RC-004: stored bytes corrupted on disk are found while chunks are read ahead of the
    sender; the stream ends in DATA_LOSS (never OK) and the stored blob is deleted."""
    data = os.urandom(BLOB)
    disk_server.content().WriteBlob(iter(write_chunks(data, chunk=CHUNK)))
    hexd = digest_of(data).hash.hex()
    path = disk_server.root / f"v1/cas/blake3/{hexd[:2]}/{hexd}-{len(data)}"
    stored = bytearray(path.read_bytes())
    stored[len(stored) // 2] ^= 0xFF  # inside a raw block: only the digest can tell
    path.write_bytes(bytes(stored))
    with pytest.raises(grpc.RpcError) as caught:
        _read(disk_server, data, accept=accept)
    assert caught.value.code() is grpc.StatusCode.DATA_LOSS
    assert not path.exists()
    assert _absent(disk_server, data)


def test_clients_that_stop_reading_do_not_hold_the_storage_threads(tmp_path: Path) -> None:
    """SVC-001: ReadBlob streams whose clients stop reading (more of them than storage
    threads) leave the threads to other calls, and finish when their clients read on."""
    limits = dataclasses.replace(TEST_LIMITS, max_blob_size=64 << 20)
    config = server_config(storage=str(tmp_path / "store"), limits=limits, storage_threads=2)
    with running_server(config, config_storage=True) as server:
        data = os.urandom(24 << 20)  # larger than any HTTP/2 window
        server.content().WriteBlob(iter(write_chunks(data, chunk=512 << 10)))
        request = cache_pb2.ReadBlobRequest(hash_function=BLAKE3, digest=digest_of(data))
        stalled = [server.content().ReadBlob(request) for _ in range(4)]
        firsts = [next(stream) for stream in stalled]
        time.sleep(0.5)  # every stream's sends are blocked on its client
        reply = server.content().FindMissingBlobs(
            cache_pb2.FindMissingBlobsRequest(hash_function=BLAKE3, digests=[digest_of(data)]),
            timeout=10,
        )
        assert list(reply.missing) == []
        for first, stream in zip(firsts, stalled, strict=True):
            assert first.data + b"".join(c.data for c in stream) == data
