"""ContentStore over real gRPC: find-missing, batches, streams, verification and limits
(RC-004, RC-006, RC-007, SVC-006)."""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Iterator

import grpc
import pytest

from cache_service.storage.base import BlobRef
from hazremote.domain.digest import Digest
from hazremote.wire.haz.remote.v1 import cache_pb2, digest_pb2
from tests.cache_service.server.serverkit import (
    BLAKE3,
    HASH,
    IDENTITY,
    TEST_LIMITS,
    ZSTD,
    ServerThread,
    digest_of,
    running_server,
    server_config,
    unzstd,
    upload,
    write_chunks,
    zstd,
)


def _missing(server: ServerThread, *blobs: bytes) -> list[bytes]:
    reply = server.content().FindMissingBlobs(
        cache_pb2.FindMissingBlobsRequest(
            hash_function=BLAKE3, digests=[digest_of(b) for b in blobs]
        )
    )
    return [d.hash for d in reply.missing]


def _read(
    server: ServerThread,
    data: bytes,
    *,
    offset: int = 0,
    accept: tuple[cache_pb2.Compression, ...] = (),
) -> tuple[int, bytes]:
    chunks = list(
        server.content().ReadBlob(
            cache_pb2.ReadBlobRequest(
                hash_function=BLAKE3,
                digest=digest_of(data),
                offset=offset,
                accepted_compressions=accept,
            )
        )
    )
    return chunks[0].compression, b"".join(c.data for c in chunks)


def _ref(data: bytes) -> BlobRef:
    d = digest_of(data)
    return BlobRef(hash_name=HASH, digest=Digest(d.hash), size=d.size_bytes)


def test_find_missing_reports_only_absent_blobs_in_request_order(server: ServerThread) -> None:
    """RC-007: after uploading one of three blobs, the other two are missing, in order."""
    a, b, c = os.urandom(10), os.urandom(20), os.urandom(30)
    upload(server, b)
    assert _missing(server, a, b, c) == [digest_of(a).hash, digest_of(c).hash]


def test_batch_update_then_batch_read_round_trips_identity_and_zstd(server: ServerThread) -> None:
    """RC-006: identity uploads are stored as zstd; reads honour the accepted compressions."""
    plain, packed = b"hello " * 100, b"packed " * 100
    reply = server.content().BatchUpdateBlobs(
        cache_pb2.BatchUpdateBlobsRequest(
            hash_function=BLAKE3,
            items=[
                cache_pb2.BatchUpdateBlobsRequest.Item(digest=digest_of(plain), data=plain),
                cache_pb2.BatchUpdateBlobsRequest.Item(
                    digest=digest_of(packed), data=zstd(packed), compression=ZSTD
                ),
            ],
        )
    )
    assert [i.status_code for i in reply.items] == [0, 0]
    # At rest: one zstd frame (RC-006).
    handle = server.blob_leaf.open_read(_ref(plain))
    assert handle is not None
    assert unzstd(handle.read()) == plain
    identity = server.content().BatchReadBlobs(
        cache_pb2.BatchReadBlobsRequest(
            hash_function=BLAKE3, digests=[digest_of(plain), digest_of(packed)]
        )
    )
    assert [(i.status_code, i.compression, i.data) for i in identity.items] == [
        (0, IDENTITY, plain),
        (0, IDENTITY, packed),
    ]
    compressed = server.content().BatchReadBlobs(
        cache_pb2.BatchReadBlobsRequest(
            hash_function=BLAKE3, digests=[digest_of(plain)], accepted_compressions=[ZSTD]
        )
    )
    assert compressed.items[0].compression == ZSTD
    assert unzstd(compressed.items[0].data) == plain


def test_batch_read_of_absent_blob_is_a_per_item_not_found(server: ServerThread) -> None:
    """Each batch item succeeds or fails on its own: an absent blob is NOT_FOUND (5)."""
    present, absent = os.urandom(64), os.urandom(64)
    upload(server, present)
    reply = server.content().BatchReadBlobs(
        cache_pb2.BatchReadBlobsRequest(
            hash_function=BLAKE3, digests=[digest_of(absent), digest_of(present)]
        )
    )
    assert [i.status_code for i in reply.items] == [grpc.StatusCode.NOT_FOUND.value[0], 0]
    assert reply.items[1].data == present


def test_batch_update_with_bytes_not_matching_digest_fails_that_item_only(
    server: ServerThread,
) -> None:
    """RC-004: a mismatching item is INVALID_ARGUMENT and stays invisible; the other is stored."""
    good, claimed, sent = os.urandom(100), os.urandom(100), os.urandom(100)
    reply = server.content().BatchUpdateBlobs(
        cache_pb2.BatchUpdateBlobsRequest(
            hash_function=BLAKE3,
            items=[
                cache_pb2.BatchUpdateBlobsRequest.Item(digest=digest_of(claimed), data=sent),
                cache_pb2.BatchUpdateBlobsRequest.Item(digest=digest_of(good), data=good),
            ],
        )
    )
    assert reply.items[0].status_code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "mismatch" in reply.items[0].status_message
    assert reply.items[1].status_code == 0
    assert _missing(server, claimed, good) == [digest_of(claimed).hash]


def test_wrong_declared_size_is_invalid_argument(server: ServerThread) -> None:
    """RC-004: right hash, wrong size → INVALID_ARGUMENT, nothing stored."""
    data = os.urandom(50)
    digest = digest_pb2.Digest(hash=digest_of(data).hash, size_bytes=49)
    reply = server.content().BatchUpdateBlobs(
        cache_pb2.BatchUpdateBlobsRequest(
            hash_function=BLAKE3,
            items=[cache_pb2.BatchUpdateBlobsRequest.Item(digest=digest, data=data)],
        )
    )
    assert reply.items[0].status_code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert server.blob_leaf.missing([_ref(data)]) == [_ref(data)]


@pytest.mark.parametrize("length", [0, 31, 33])
def test_malformed_digest_is_invalid_argument(server: ServerThread, length: int) -> None:
    """A digest of the wrong length is INVALID_ARGUMENT for the whole call."""
    bad = digest_pb2.Digest(hash=b"x" * length, size_bytes=1)
    with pytest.raises(grpc.RpcError) as caught:
        server.content().FindMissingBlobs(
            cache_pb2.FindMissingBlobsRequest(hash_function=BLAKE3, digests=[bad])
        )
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "32" in (caught.value.details() or "")


def test_negative_size_and_unknown_hash_function_are_invalid_argument(server: ServerThread) -> None:
    """Digests with a negative size or an unknown hash function are rejected."""
    for request in (
        cache_pb2.FindMissingBlobsRequest(
            hash_function=BLAKE3, digests=[digest_pb2.Digest(hash=b"x" * 32, size_bytes=-1)]
        ),
        cache_pb2.FindMissingBlobsRequest(hash_function=7, digests=[digest_of(b"x")]),  # type: ignore[arg-type]  # unknown
    ):
        with pytest.raises(grpc.RpcError) as caught:
            server.content().FindMissingBlobs(request)
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT


def test_batches_over_the_limits_are_resource_exhausted(server: ServerThread) -> None:
    """SVC-006: too many items, or too many bytes in one batch → RESOURCE_EXHAUSTED."""
    many = [digest_of(i.to_bytes(4, "big")) for i in range(TEST_LIMITS.max_batch_items + 1)]
    with pytest.raises(grpc.RpcError) as caught:
        server.content().FindMissingBlobs(
            cache_pb2.FindMissingBlobsRequest(hash_function=BLAKE3, digests=many)
        )
    assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert str(TEST_LIMITS.max_batch_items) in (caught.value.details() or "")
    big = [os.urandom(TEST_LIMITS.max_batch_total_size // 2 + 1) for _ in range(2)]
    with pytest.raises(grpc.RpcError) as caught:
        server.content().BatchUpdateBlobs(
            cache_pb2.BatchUpdateBlobsRequest(
                hash_function=BLAKE3,
                items=[
                    cache_pb2.BatchUpdateBlobsRequest.Item(digest=digest_of(b), data=b) for b in big
                ],
            )
        )
    assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    with pytest.raises(grpc.RpcError) as caught:
        server.content().BatchReadBlobs(
            cache_pb2.BatchReadBlobsRequest(
                hash_function=BLAKE3, digests=[digest_of(b) for b in big]
            )
        )
    assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED


def test_message_over_the_message_limit_is_resource_exhausted(server: ServerThread) -> None:
    """SVC-006: a message larger than max_message_size is refused by gRPC, the server lives."""
    huge = os.urandom(TEST_LIMITS.max_message_size + 1024)
    with pytest.raises(grpc.RpcError) as caught:
        server.content().BatchUpdateBlobs(
            cache_pb2.BatchUpdateBlobsRequest(
                hash_function=BLAKE3,
                items=[cache_pb2.BatchUpdateBlobsRequest.Item(digest=digest_of(huge), data=huge)],
            )
        )
    assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert _missing(server, b"still serving") == [digest_of(b"still serving").hash]


def test_write_blob_streams_large_blob_and_read_blob_streams_it_back(server: ServerThread) -> None:
    """RC-006: a blob larger than a message streams in chunks both ways, identity and zstd."""
    data = os.urandom(TEST_LIMITS.max_message_size * 2)
    reply = server.content().WriteBlob(iter(write_chunks(data)))
    assert reply.committed_size_bytes == len(data)
    assert _read(server, data) == (IDENTITY, data)
    compression, packed = _read(server, data, accept=(ZSTD,))
    assert compression == ZSTD
    assert unzstd(packed) == data


def test_write_blob_accepts_zstd_stream(server: ServerThread) -> None:
    """RC-006: a zstd-encoded upload passes through as the stored form."""
    data = b"compressible line\n" * 50_000
    reply = server.content().WriteBlob(iter(write_chunks(data, compression=ZSTD, chunk=4096)))
    assert reply.committed_size_bytes == len(data)
    assert _read(server, data)[1] == data


def test_read_blob_honours_offset_in_both_encodings(server: ServerThread) -> None:
    """ReadBlob ``offset`` resumes an interrupted read (uncompressed offset)."""
    data = os.urandom(300_000)
    server.content().WriteBlob(iter(write_chunks(data)))
    assert _read(server, data, offset=123_457) == (IDENTITY, data[123_457:])
    compression, packed = _read(server, data, offset=200_000, accept=(ZSTD,))
    assert compression == ZSTD
    assert unzstd(packed) == data[200_000:]
    assert _read(server, data, offset=len(data)) == (IDENTITY, b"")
    with pytest.raises(grpc.RpcError) as caught:
        _read(server, data, offset=len(data) + 1)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT


def test_read_blob_of_absent_blob_is_not_found(server: ServerThread) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        _read(server, os.urandom(10))
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND


def test_empty_blob_round_trips(server: ServerThread) -> None:
    """The empty blob (empty stdout) is a valid blob."""
    server.content().WriteBlob(iter(write_chunks(b"")))
    assert _read(server, b"") == (IDENTITY, b"")


def test_write_blob_with_wrong_bytes_is_invalid_argument_and_invisible(
    server: ServerThread,
) -> None:
    """RC-004: a streamed blob whose bytes do not match its digest is never published."""
    data = os.urandom(200_000)
    messages = write_chunks(data)
    messages[1].data = os.urandom(len(messages[1].data))
    with pytest.raises(grpc.RpcError) as caught:
        server.content().WriteBlob(iter(messages))
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert _missing(server, data) == [digest_of(data).hash]


def test_write_blob_over_max_blob_size_is_resource_exhausted(server: ServerThread) -> None:
    """SVC-006: a declared size above max_blob_size is refused at the first chunk."""
    first = cache_pb2.WriteBlobChunk(
        hash_function=BLAKE3,
        digest=digest_pb2.Digest(hash=b"\x01" * 32, size_bytes=TEST_LIMITS.max_blob_size + 1),
        data=b"x",
    )
    with pytest.raises(grpc.RpcError) as caught:
        server.content().WriteBlob(iter([first]))
    assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED


def test_write_blob_stream_ending_without_finish_publishes_nothing(server: ServerThread) -> None:
    """A stream that ends before its finish chunk is INVALID_ARGUMENT, nothing visible."""
    data = os.urandom(200_000)
    with pytest.raises(grpc.RpcError) as caught:
        server.content().WriteBlob(iter(write_chunks(data, finish=False)))
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert _missing(server, data) == [digest_of(data).hash]


def test_write_blob_aborted_midway_publishes_nothing(server: ServerThread) -> None:
    """A client that cancels a WriteBlob midway leaves nothing visible; the server serves on."""
    data = os.urandom(300_000)
    messages = write_chunks(data)
    sent_two = threading.Event()
    release = threading.Event()

    def requests() -> Iterator[cache_pb2.WriteBlobChunk]:
        yield messages[0]
        yield messages[1]
        sent_two.set()
        release.wait(10)

    future = server.content().WriteBlob.future(requests())
    assert sent_two.wait(10)
    future.cancel()
    release.set()
    with pytest.raises(grpc.FutureCancelledError):
        future.result()
    assert _missing(server, data) == [digest_of(data).hash]
    upload(server, b"after the abort")


def test_write_of_present_blob_succeeds_at_once(server: ServerThread) -> None:
    """A WriteBlob of a blob already stored succeeds without its remaining chunks."""
    data = os.urandom(200_000)
    server.content().WriteBlob(iter(write_chunks(data)))
    reply = server.content().WriteBlob(iter(write_chunks(data)[:1]))
    assert reply.committed_size_bytes == len(data)


def test_corrupt_stored_blob_is_data_loss_and_deleted(server: ServerThread) -> None:
    """RC-004: stored bytes found corrupt → DATA_LOSS, and the server deletes them."""
    data = os.urandom(1000)
    ref = _ref(data)
    server.blob_leaf.write(ref, [zstd(os.urandom(1000))])  # bypasses verification
    reply = server.content().BatchReadBlobs(
        cache_pb2.BatchReadBlobsRequest(hash_function=BLAKE3, digests=[digest_of(data)])
    )
    assert reply.items[0].status_code == grpc.StatusCode.DATA_LOSS.value[0]
    assert server.blob_leaf.missing([ref]) == [ref]
    server.blob_leaf.write(ref, [zstd(os.urandom(1000))])
    with pytest.raises(grpc.RpcError) as caught:
        _read(server, data, accept=(ZSTD,))
    assert caught.value.code() is grpc.StatusCode.DATA_LOSS
    assert server.blob_leaf.missing([ref]) == [ref]


def test_concurrent_streams_over_the_limit_are_resource_exhausted() -> None:
    """SVC-006: with max_concurrent_streams=1, a second stream while one is open is refused."""
    limits = dataclasses.replace(TEST_LIMITS, max_concurrent_streams=1, max_blob_size=64 << 20)
    with running_server(server_config(limits=limits)) as server:
        # Larger than any HTTP/2 window, so the first stream stays open until it is consumed.
        data = os.urandom(24 << 20)
        server.content().WriteBlob(iter(write_chunks(data, chunk=512 << 10)))
        holder = server.content().ReadBlob(
            cache_pb2.ReadBlobRequest(hash_function=BLAKE3, digest=digest_of(data))
        )
        first = next(holder)  # the server is inside the stream: its slot is taken
        with pytest.raises(grpc.RpcError) as caught:
            _read(server, b"any")
        assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "limit is 1" in (caught.value.details() or "")
        rest = b"".join(chunk.data for chunk in holder)
        assert first.data + rest == data
        with pytest.raises(grpc.RpcError) as caught:
            _read(server, b"any")
        assert caught.value.code() is grpc.StatusCode.NOT_FOUND  # the slot was released
