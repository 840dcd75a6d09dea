"""The BlobStore contract, as far as the wire API allows, on :class:`GrpcBlobStore`.

The adapter talks to a real in-process ``haz-cache-service`` (gRPC over loopback TCP, memory
storage behind the server's VerifyingBlobStore). Asserted: SVC-001 round trips (small,
large streamed — RC-006), RC-007 ``missing`` in request order across several batches,
idempotent writes, RC-004 rejection of wrong bytes with nothing published, interrupted
writes publishing nothing, corrupt stored data surfacing as an error on read. Not asserted:
``delete`` and ``iterate`` — the wire API has neither; the adapter says so.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from cache_service.config import Limits
from cache_service.storage.base import BlobRef, BlobVerificationError, StorageError
from cache_service.storage.verifying import (
    VerifyingBlobStore,
    compress_bytes,
)
from hazremote.domain.model import HashName
from hazremote.remote.blobstore import GrpcBlobStore
from tests.cache_service.server.serverkit import ServerThread, running_server, server_config
from tests.cache_service.storage.conftest import (
    assert_decodes_to,
    damaged_blob,
    large_random_blob,
    make_blob,
)

_MIB = 1024 * 1024
#: Small batch and chunk bounds, a blob bound above the large-blob test.
LIMITS = Limits(
    max_blob_size=32 << 20,
    max_batch_items=20,
    max_batch_total_size=256 << 10,
    max_message_size=4 << 20,
    max_concurrent_streams=8,
    stream_chunk_size=64 << 10,
)


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    """One server per module: every test uses blobs of its own (:func:`unique`)."""
    with running_server(server_config(limits=LIMITS)) as running:
        yield running


def unique(data: bytes) -> bytes:
    """``data`` made distinct from every other test's blobs on the shared server."""
    return uuid.uuid4().bytes + data


@pytest.fixture
def store(server: ServerThread) -> Iterator[GrpcBlobStore]:
    with GrpcBlobStore(server.target, hash_name=HashName.BLAKE3, timeout_s=30) as remote:
        yield remote


def _read_all(store: GrpcBlobStore, ref: BlobRef) -> bytes | None:
    reader = VerifyingBlobStore(inner=store).open_read(ref)
    if reader is None:
        return None
    with reader:
        return reader.read()


def test_round_trip_of_a_small_blob(store: GrpcBlobStore, server: ServerThread) -> None:
    """SVC-001/RC-004: a written blob reads back as the same stored form, verified, and the
    server's leaf holds it."""
    blob = make_blob(unique(b"hello, shared cache" * 10))
    assert store.missing([blob.ref]) == [blob.ref]
    assert store.open_read(blob.ref) is None
    store.write(blob.ref, [blob.stored[:5], blob.stored[5:]])
    assert store.missing([blob.ref]) == []
    assert _read_all(store, blob.ref) == blob.stored
    assert server.blob_leaf.missing([blob.ref]) == []


def test_round_trip_of_a_large_streamed_blob(store: GrpcBlobStore) -> None:
    """RC-006: a 12 MiB blob streams out and back in bounded chunks and verifies."""
    ref, stored = large_random_blob(mib=12, seed=11)
    store.write(ref, (stored[i : i + 3 * _MIB] for i in range(0, len(stored), 3 * _MIB)))

    reader = store.open_read(ref)
    assert reader is not None
    with reader:
        assert reader.read() == stored
        reader.seek(0)
        assert_decodes_to(reader, ref)


def test_views_and_tiny_chunks_are_sent_as_their_bytes(store: GrpcBlobStore) -> None:
    """SVC-001: the store contract's chunks may be views (a raw frame's blocks) and of any
    size; protobuf takes only bytes, so the gRPC leaf sends what they hold."""
    ref, stored = large_random_blob(mib=2, seed=16)
    view = memoryview(stored)
    store.write(ref, [view[:3], stored[3:10], view[10 : _MIB + 7], view[_MIB + 7 :]])
    reader = store.open_read(ref)
    assert reader is not None
    with reader:
        assert reader.read() == stored


def test_missing_reports_absent_refs_in_request_order_across_batches(
    store: GrpcBlobStore,
) -> None:
    """RC-007: missing() answers the refs not held, in the order asked, also when the request
    exceeds the server's batch bound (20 here) and mixes hash functions."""
    blobs = [make_blob(unique(f"blob {i}".encode() * 30)) for i in range(45)]
    blobs.append(make_blob(unique(b"sha" * 40), hash_name=HashName.SHA256))
    held = blobs[::3]
    for blob in held:
        store.write(blob.ref, [blob.stored])
    asked = [blob.ref for blob in reversed(blobs)]
    held_refs = {blob.ref for blob in held}
    assert store.missing(asked) == [ref for ref in asked if ref not in held_refs]
    assert store.missing([]) == []


def test_writing_an_existing_blob_again_succeeds(
    store: GrpcBlobStore, server: ServerThread
) -> None:
    """SVC-001: a write of a blob already present succeeds and leaves one copy."""
    blob = make_blob()
    store.write(blob.ref, [blob.stored])
    store.write(blob.ref, [blob.stored])
    assert _read_all(store, blob.ref) == blob.stored
    assert [info.ref for info in server.blob_leaf.iterate()].count(blob.ref) == 1


@pytest.mark.parametrize(
    "case",
    ["wrong_digest", "size_too_small", "size_too_large", "garbage", "truncated", "two_frames"],
)
def test_wrong_bytes_are_rejected_and_stay_invisible(
    store: GrpcBlobStore, server: ServerThread, case: str
) -> None:
    """RC-004: the service verifies a write; a mismatch is BlobVerificationError and nothing
    is published (neither under the claimed ref nor the real one)."""
    data = unique(b"the real content of a blob " * 50)
    good, ref, stored = damaged_blob(data, case)
    with pytest.raises(BlobVerificationError):
        store.write(ref, (stored[i : i + 16] for i in range(0, len(stored), 16)))
    assert store.missing([ref, good.ref]) == [ref, good.ref]
    assert server.blob_leaf.missing([ref, good.ref]) == [ref, good.ref]


def test_a_write_whose_source_fails_publishes_nothing(
    store: GrpcBlobStore, server: ServerThread
) -> None:
    """§6: a write whose chunk source raises ends the stream unfinished; the source's own
    exception propagates and the service publishes nothing."""
    blob = make_blob(unique(bytes(range(256)) * 40))

    def interrupted() -> Iterator[bytes]:
        yield blob.stored[:10]
        raise ConnectionAbortedError("client went away")

    with pytest.raises(ConnectionAbortedError):
        store.write(blob.ref, interrupted())
    assert store.missing([blob.ref]) == [blob.ref]
    assert server.blob_leaf.missing([blob.ref]) == [blob.ref]


def test_corrupt_stored_data_is_an_error_on_read(
    store: GrpcBlobStore, server: ServerThread
) -> None:
    """RC-004: bytes stored under the wrong ref are caught by the service (DATA_LOSS, and
    it deletes them); the adapter raises StorageError instead of handing them out."""
    blob = make_blob(unique(b"x" * 5000))
    server.blob_leaf.write(blob.ref, [compress_bytes(unique(b"y" * 5000))])  # unverified leaf
    with pytest.raises(StorageError, match="DATA_LOSS"):
        store.open_read(blob.ref)
    assert store.missing([blob.ref]) == [blob.ref]
    assert server.blob_leaf.missing([blob.ref]) == [blob.ref]


def test_an_unreachable_service_is_a_storage_error() -> None:
    """SVC-001: infrastructure failure surfaces as StorageError within the call deadline."""
    from tests.support.seaweedfs import free_port

    with GrpcBlobStore(f"127.0.0.1:{free_port()}", hash_name=HashName.BLAKE3, timeout_s=1) as dead:
        with pytest.raises(StorageError):
            dead.missing([make_blob().ref])
        with pytest.raises(StorageError):
            dead.open_read(make_blob().ref)


def test_delete_and_iterate_are_not_offered_by_the_wire_api(store: GrpcBlobStore) -> None:
    """SVC-001: the wire API has no delete or listing; the adapter refuses rather than lies."""
    blob = make_blob()
    store.write(blob.ref, [blob.stored])
    with pytest.raises(NotImplementedError, match="no delete"):
        store.delete(blob.ref)
    with pytest.raises(NotImplementedError, match="no listing"):
        list(store.iterate())
    assert store.missing([blob.ref]) == []
