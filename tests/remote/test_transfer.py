"""The blob transfer client (hazremote.remote.transfer) against a real in-process service.

The service is ``cache_service.app.serve()`` over memory storage behind its VerifyingBlobStore
(small batch, chunk and blob bounds). Asserted: RC-006 round trips of small (batched) and
large (streamed) blobs, stored raw or as zstd frames; RC-007 find-missing across several
batches and uploads that send only what is missing; idempotent uploads; RC-004 verification
of every download; errors as values (``TransferError``), healthy or not.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
import zstandard

from cache_service.config import Limits as ServiceLimits
from cache_service.storage.base import BlobRef
from cache_service.storage.verifying import compress_bytes
from hazremote.cache.local import StoredBlob
from hazremote.cache.manifest import Compression
from hazremote.domain.digest import digest_bytes
from hazremote.domain.model import HashName
from hazremote.remote.settings import RemoteTimeouts
from hazremote.remote.transfer import BlobTransfer, TransferError, TransferStats
from tests.cache_service.server.serverkit import ServerThread, running_server, server_config
from tests.cache_service.storage.conftest import damaged_blob

HASH = HashName.BLAKE3
LIMITS = ServiceLimits(
    max_blob_size=8 << 20,
    max_batch_items=20,
    max_batch_total_size=256 << 10,
    max_message_size=4 << 20,
    max_concurrent_streams=8,
    stream_chunk_size=64 << 10,
)
TIMEOUTS = RemoteTimeouts(connect_s=2.0, lookup_s=5.0, transfer_s=10.0)


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    """One server per module: every test uses blobs of its own (:func:`unique`)."""
    with running_server(server_config(limits=LIMITS)) as running:
        yield running


def unique(data: bytes) -> bytes:
    return uuid.uuid4().bytes + data


def run(target: str, body: Any, **kwargs: Any) -> Any:
    """Run ``body(transfer)`` on a fresh loop with a transfer client of ``target``."""

    async def main() -> Any:
        channel = grpc.aio.insecure_channel(target)
        with ThreadPoolExecutor(max_workers=2) as files:
            transfer = BlobTransfer(
                lambda: channel,
                hash_name=HASH,
                namespace="main",
                metadata=(),
                timeouts=kwargs.pop("timeouts", TIMEOUTS),
                files=files,
                **kwargs,
            )
            try:
                return await body(transfer)
            finally:
                transfer.close()
                await channel.close()

    return asyncio.run(main())


def stored(tmp_path: Path, data: bytes, *, zstd: bool = False) -> StoredBlob:
    """A blob file as the local cache keeps it (raw, or one zstd frame)."""
    digest = digest_bytes(HASH, data)
    path = tmp_path / f"{digest.hex}.{'zst' if zstd else 'raw'}"
    path.write_bytes(
        zstandard.ZstdCompressor(write_content_size=True).compress(data) if zstd else data
    )
    return StoredBlob(
        digest=digest,
        size=len(data),
        path=path,
        compression=Compression.ZSTD if zstd else Compression.NONE,
    )


def held(server: ServerThread, blob: StoredBlob) -> bool:
    ref = BlobRef(hash_name=HASH, digest=blob.digest, size=blob.size)
    return server.blob_leaf.missing([ref]) == []


def fetched_bytes(value: object) -> bytes:
    if isinstance(value, Path):
        return value.read_bytes()
    data = getattr(value, "data", None)
    assert isinstance(data, bytes), value
    return data


@pytest.mark.parametrize("zstd", [False, True])
@pytest.mark.parametrize("size", [10, 5000, 100_000, 3 << 20])
def test_upload_then_download_round_trips_verified(
    server: ServerThread, tmp_path: Path, size: int, zstd: bool
) -> None:
    """RC-006: small blobs go in batches, those over half a batch (128 KiB) stream; either
    form at rest; the download verifies and yields the uncompressed bytes."""
    data = unique(os.urandom(size // 2) + b"z" * (size - size // 2))
    blob = stored(tmp_path, data, zstd=zstd)
    stats = TransferStats()

    async def body(transfer: BlobTransfer) -> Any:
        assert await transfer.upload([blob]) is None
        return await transfer.download({blob.digest: blob.size}, tmp_path / "down")

    got = run(server.target, body, stats=stats)
    assert not isinstance(got, TransferError), got
    assert fetched_bytes(got[blob.digest]) == data
    assert held(server, blob)
    assert (stats.blobs_uploaded, stats.blob_upload_bytes) == (1, blob.size)
    assert (stats.blobs_downloaded, stats.bytes_downloaded) == (1, blob.size)


def test_large_downloads_are_files_and_small_ones_stay_in_memory_within_the_budget(
    server: ServerThread, tmp_path: Path
) -> None:
    """RC-006: batch blobs are kept in memory up to the memory budget, then written to
    files; streamed blobs always go to ``dest/<hex>``."""
    small = [stored(tmp_path, unique(b"s" * 1000)) for _ in range(3)]
    large = stored(tmp_path, unique(os.urandom(300_000)))

    async def body(transfer: BlobTransfer) -> Any:
        assert await transfer.upload([*small, large]) is None
        return await transfer.download(
            {b.digest: b.size for b in [*small, large]}, tmp_path / "down"
        )

    got = run(server.target, body, memory_budget=2500)
    assert not isinstance(got, TransferError), got
    assert got[large.digest] == tmp_path / "down" / large.digest.hex
    kinds = sorted(isinstance(got[b.digest], Path) for b in small)
    assert kinds == [False, False, True]  # two fit 2,500 bytes; the third spilled to a file
    for blob in [*small, large]:
        assert fetched_bytes(got[blob.digest]) == blob.path.read_bytes()


def test_find_missing_answers_across_batches_and_upload_sends_only_those(
    server: ServerThread, tmp_path: Path
) -> None:
    """RC-007: 45 digests (3 batches of at most 20) in one call; an upload of all of them
    then sends only the ones the server lacked."""
    blobs = [stored(tmp_path, unique(b"b%d" % i)) for i in range(45)]
    present = blobs[::3]
    stats = TransferStats()

    async def body(transfer: BlobTransfer) -> Any:
        assert await transfer.upload(present) is None
        missing = await transfer.find_missing({b.digest: b.size for b in blobs})
        assert await transfer.upload(blobs) is None
        return missing

    missing = run(server.target, body, stats=stats)
    assert missing == {b.digest for b in blobs} - {b.digest for b in present}
    assert stats.blobs_uploaded == 45
    assert stats.blobs_already_present == len(present) * 2
    assert all(held(server, b) for b in blobs)


def test_uploading_a_present_blob_again_succeeds_and_sends_nothing(
    server: ServerThread, tmp_path: Path
) -> None:
    blob = stored(tmp_path, unique(b"again"))
    stats = TransferStats()

    async def body(transfer: BlobTransfer) -> Any:
        return [await transfer.upload([blob]), await transfer.upload([blob, blob])]

    assert run(server.target, body, stats=stats) == [None, None]
    assert (stats.blobs_uploaded, stats.blobs_already_present) == (1, 1)


@pytest.mark.parametrize("repeat", [50, 6000])  # one batch item; a stream (> 128 KiB)
@pytest.mark.parametrize(
    "case",
    ["wrong_digest", "size_too_small", "size_too_large", "garbage", "truncated", "two_frames"],
)
def test_wrong_bytes_are_refused_and_stay_invisible(
    server: ServerThread, tmp_path: Path, case: str, repeat: int
) -> None:
    """RC-004: the service verifies every upload; a blob file that does not hold what its
    digest and size claim is an error value, and nothing is published (neither under the
    claimed digest nor the real one). (Moved from the deleted GrpcBlobStore contract.)"""
    good, ref, frame = damaged_blob(unique(b"the real content of a blob " * repeat), case)
    path = tmp_path / "damaged.zst"
    path.write_bytes(frame)
    claimed = StoredBlob(digest=ref.digest, size=ref.size, path=path, compression=Compression.ZSTD)

    got = run(server.target, lambda t: t.upload([claimed]))
    assert isinstance(got, TransferError)
    assert server.blob_leaf.missing([ref, good.ref]) == [ref, good.ref]


def test_a_blob_over_the_servers_limit_is_an_answered_error(
    server: ServerThread, tmp_path: Path
) -> None:
    """The server's ``max_blob_size`` (8 MiB) refuses before anything is sent: bad input, not
    an unhealthy remote."""
    big = stored(tmp_path, unique(b"\0" * (9 << 20)), zstd=True)

    got = run(server.target, lambda t: t.upload([big]))
    assert isinstance(got, TransferError)
    assert "exceeds the server's limit" in got.message
    assert got.unhealthy is False
    assert not held(server, big)


@pytest.mark.parametrize("size", [5000, 300_000])
def test_corrupt_data_on_the_server_is_never_handed_out(
    server: ServerThread, tmp_path: Path, size: int
) -> None:
    """RC-004: bytes stored (unverified, in the leaf) under another blob's digest make the
    download an error, batched or streamed; no file holds them under the asked name."""
    data = unique(b"x" * size)
    ref = BlobRef(hash_name=HASH, digest=digest_bytes(HASH, data), size=size + 16)
    server.blob_leaf.write(ref, [compress_bytes(unique(b"y" * size))])

    got = run(server.target, lambda t: t.download({ref.digest: ref.size}, tmp_path / "down"))
    assert isinstance(got, TransferError)
    written = tmp_path / "down" / ref.digest.hex
    assert not written.exists() or written.read_bytes() != unique(b"y" * size)[16:]


def test_a_blob_the_server_lacks_is_an_error(server: ServerThread, tmp_path: Path) -> None:
    digest = digest_bytes(HASH, unique(b"never uploaded"))
    got = run(server.target, lambda t: t.download({digest: 30}, tmp_path / "down"))
    assert isinstance(got, TransferError)


def test_an_unreachable_service_is_an_unhealthy_error_value(tmp_path: Path) -> None:
    """Infrastructure failure is a value (``unhealthy``) within the deadline, for every call."""
    from tests.support.seaweedfs import free_port

    blob = stored(tmp_path, b"lonely")
    quick = RemoteTimeouts(connect_s=0.5, lookup_s=0.5, transfer_s=0.5)

    async def body(transfer: BlobTransfer) -> list[object]:
        return [
            await transfer.limits(),
            await transfer.find_missing({blob.digest: blob.size}),
            await transfer.upload([blob]),
            await transfer.download({blob.digest: blob.size}, tmp_path / "down"),
        ]

    for got in run(f"127.0.0.1:{free_port()}", body, timeouts=quick):
        assert isinstance(got, TransferError)
        assert got.unhealthy


def test_limits_are_the_servers(server: ServerThread) -> None:
    got = run(server.target, lambda t: t.limits())
    assert not isinstance(got, TransferError)
    assert (got.max_batch_items, got.max_batch_bytes, got.chunk) == (20, 256 << 10, 64 << 10)
    assert (got.max_blob, got.zstd) == (8 << 20, True)
