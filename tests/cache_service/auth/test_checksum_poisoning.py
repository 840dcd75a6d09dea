"""Issue 13, item 4: a pull-request token cannot poison ``main``'s blobs with a zstd frame
whose content is right and whose content checksum is wrong (real server on loopback).

Spec coverage:
* RC-004 — a stored form is verified on write, its zstd content checksum included: a frame
  with a wrong checksum is ``INVALID_ARGUMENT`` and nothing is stored.
* SEC-004 — one namespace's write never degrades another's entries: the blob stays missing
  for ``main``, which then uploads it and reads it back (identity and zstd) intact.
"""

from __future__ import annotations

import os

import grpc
import pytest
import zstandard

from hazremote.wire.haz.remote.v1 import cache_pb2
from tests.cache_service.auth.authkit import bearer
from tests.cache_service.server.serverkit import (
    BLAKE3,
    IDENTITY,
    ZSTD,
    ServerThread,
    digest_of,
    unzstd,
)


def _checksummed(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=3, write_checksum=True).compress(data)


def _bad_checksum(frame: bytes) -> bytes:
    """The frame with the last byte of its 4-byte content checksum flipped."""
    return frame[:-1] + bytes((frame[-1] ^ 0x5A,))


def _predictable_output() -> bytes:
    """What a ``main`` build will produce (an attacker can build it too)."""
    return os.urandom(48 << 10) + b"libmain.a " * 4096


def _write_stream(data: bytes, frame: bytes) -> list[cache_pb2.WriteBlobChunk]:
    pieces = [frame[i : i + (16 << 10)] for i in range(0, len(frame), 16 << 10)]
    messages = [cache_pb2.WriteBlobChunk(data=p) for p in pieces]
    messages[0].hash_function = BLAKE3
    messages[0].digest.CopyFrom(digest_of(data))
    messages[0].compression = ZSTD
    messages[-1].finish = True
    return messages


def _missing_for_main(server: ServerThread, data: bytes) -> bool:
    reply = server.content().FindMissingBlobs(
        cache_pb2.FindMissingBlobsRequest(hash_function=BLAKE3, digests=[digest_of(data)]),
        metadata=bearer("ci-main"),
        timeout=20,
    )
    return list(reply.missing) == [digest_of(data)]


def test_a_batch_upload_with_a_wrong_checksum_is_refused(guarded: ServerThread) -> None:
    """RC-004: the item fails with INVALID_ARGUMENT naming the checksum; nothing is stored."""
    data = _predictable_output()
    reply = guarded.content().BatchUpdateBlobs(
        cache_pb2.BatchUpdateBlobsRequest(
            hash_function=BLAKE3,
            items=[
                cache_pb2.BatchUpdateBlobsRequest.Item(
                    digest=digest_of(data),
                    data=_bad_checksum(_checksummed(data)),
                    compression=ZSTD,
                )
            ],
        ),
        metadata=bearer("ci-pr"),
        timeout=20,
    )
    (item,) = reply.items
    assert item.status_code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "checksum" in item.status_message
    assert _missing_for_main(guarded, data)


def test_a_streamed_upload_with_a_wrong_checksum_is_refused(guarded: ServerThread) -> None:
    """RC-004: WriteBlob ends INVALID_ARGUMENT; the blob stays missing for ``main``."""
    data = _predictable_output()
    with pytest.raises(grpc.RpcError) as refused:
        guarded.content().WriteBlob(
            iter(_write_stream(data, _bad_checksum(_checksummed(data)))),
            metadata=bearer("ci-pr"),
            timeout=20,
        )
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "checksum" in (refused.value.details() or "")
    assert _missing_for_main(guarded, data)


def test_main_uploads_and_reads_back_the_blob_a_pr_tried_to_poison(
    guarded: ServerThread,
) -> None:
    """SEC-004: after the refused poisoning, ``main``'s own upload (checksummed: a checksum is
    allowed when right) is stored and every reader gets the right bytes."""
    data = _predictable_output()
    frame = _checksummed(data)
    with pytest.raises(grpc.RpcError):
        guarded.content().WriteBlob(
            iter(_write_stream(data, _bad_checksum(frame))), metadata=bearer("ci-pr"), timeout=20
        )
    reply = guarded.content().WriteBlob(
        iter(_write_stream(data, frame)), metadata=bearer("ci-main"), timeout=20
    )
    assert reply.committed_size_bytes == len(data)
    assert not _missing_for_main(guarded, data)
    for accepted in ([IDENTITY], [ZSTD]):
        chunks = list(
            guarded.content().ReadBlob(
                cache_pb2.ReadBlobRequest(
                    hash_function=BLAKE3, digest=digest_of(data), accepted_compressions=accepted
                ),
                metadata=bearer("laptop"),
                timeout=20,
            )
        )
        body = b"".join(chunk.data for chunk in chunks)
        assert (unzstd(body) if chunks[0].compression == ZSTD else body) == data
    assert not _missing_for_main(guarded, data)  # no read found it corrupt and deleted it
