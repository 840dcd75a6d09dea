"""The BlobStore contract, asserted identically on every backend (SVC-001, SVC-002, RC-004).

Backends: memory, disk, S3 (a real SeaweedFS), and the read-cache composite (fast = disk,
slow = memory or S3). Writes go through :class:`VerifyingBlobStore` as the factory composes it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from cache_service.storage.base import BlobRef, BlobVerificationError, StoredChunk
from cache_service.storage.verifying import (
    VerifyingBlobStore,
    compress_bytes,
)
from hazremote.domain.model import HashName
from tests.cache_service.storage.conftest import (
    BlobBackend,
    assert_decodes_to,
    damaged_blob,
    large_random_blob,
    make_blob,
)

_MIB = 1024 * 1024


def _read_all(backend: BlobBackend, ref: BlobRef) -> bytes | None:
    reader = VerifyingBlobStore(inner=backend.store).open_read(ref)
    if reader is None:
        return None
    with reader:
        return reader.read()


def test_round_trip_of_a_small_blob(blob_backend: BlobBackend) -> None:
    """SVC-001/RC-004: a written blob reads back as the same stored form, verified."""
    store = VerifyingBlobStore(inner=blob_backend.store)
    blob = make_blob(b"hello, shared cache" * 10)
    assert store.missing([blob.ref]) == [blob.ref]
    assert store.open_read(blob.ref) is None
    store.write(blob.ref, [blob.stored[:5], blob.stored[5:]])
    assert store.missing([blob.ref]) == []
    assert _read_all(blob_backend, blob.ref) == blob.stored


def test_round_trip_of_a_large_streamed_blob(blob_backend: BlobBackend) -> None:
    """RC-006: a 20 MiB blob streams in and out in chunks (multipart on S3) and verifies."""
    ref, stored = large_random_blob(mib=20, seed=7)
    store = VerifyingBlobStore(inner=blob_backend.store)
    store.write(ref, (stored[i : i + _MIB] for i in range(0, len(stored), _MIB)))

    reader = store.open_read(ref)
    assert reader is not None
    with reader:
        assert_decodes_to(reader, ref)


def test_chunks_may_be_views_and_of_any_size(blob_backend: BlobBackend) -> None:
    """SVC-001: a write's chunks may be views of bytes (a raw frame's blocks where they
    arrived) mixed with bytes, down to 3-byte block headers; the blob is their bytes."""
    ref, stored = large_random_blob(mib=3, seed=8)
    view = memoryview(stored)
    pieces: list[StoredChunk] = [view[:10], stored[10:13], view[13 : _MIB + 1]]
    pieces += [view[_MIB + 1 : _MIB + 4]]
    pieces += [view[i : i + 100_000] for i in range(_MIB + 4, len(stored), 100_000)]
    store = VerifyingBlobStore(inner=blob_backend.store)
    store.write(ref, iter(pieces))
    assert _read_all(blob_backend, ref) == stored


def test_missing_reports_absent_refs_in_request_order(blob_backend: BlobBackend) -> None:
    """RC-007: missing() answers the refs not held, in the order asked."""
    store = VerifyingBlobStore(inner=blob_backend.store)
    a, b, c = make_blob(b"a" * 100), make_blob(b"b" * 100), make_blob(b"c" * 100)
    store.write(b.ref, [b.stored])
    assert store.missing([c.ref, b.ref, a.ref]) == [c.ref, a.ref]
    assert store.missing([]) == []


def test_writing_an_existing_blob_again_succeeds(blob_backend: BlobBackend) -> None:
    """SVC-001: a write of a blob already present succeeds and leaves one copy."""
    store = VerifyingBlobStore(inner=blob_backend.store)
    blob = make_blob()
    store.write(blob.ref, [blob.stored])
    store.write(blob.ref, [blob.stored])
    assert _read_all(blob_backend, blob.ref) == blob.stored
    assert [info.ref for info in store.iterate()] == [blob.ref]


def test_delete_removes_and_tolerates_absent(blob_backend: BlobBackend) -> None:
    """RC-004: delete (of corrupt data, by gc) removes the blob; deleting nothing is no error."""
    store = VerifyingBlobStore(inner=blob_backend.store)
    blob = make_blob()
    store.write(blob.ref, [blob.stored])
    store.delete(blob.ref)
    assert store.missing([blob.ref]) == [blob.ref]
    assert store.open_read(blob.ref) is None
    store.delete(blob.ref)


def test_iterate_lists_every_blob_with_its_stored_size(blob_backend: BlobBackend) -> None:
    """SVC-001: iterate() yields each blob once, with its ref and stored byte count."""
    store = VerifyingBlobStore(inner=blob_backend.store)
    blobs = [make_blob(), make_blob(), make_blob(hash_name=HashName.SHA256)]
    for blob in blobs:
        store.write(blob.ref, [blob.stored])
    listed = {info.ref: info.stored_bytes for info in store.iterate()}
    assert listed == {blob.ref: len(blob.stored) for blob in blobs}


def test_a_write_whose_stream_fails_publishes_nothing(blob_backend: BlobBackend) -> None:
    """§6: a write interrupted midway (client gone) leaves nothing visible, not even temp files."""
    blob = make_blob(bytes(range(256)) * 40)

    def interrupted() -> Iterator[bytes]:
        yield blob.stored[:10]
        raise ConnectionAbortedError("client went away")

    with pytest.raises(ConnectionAbortedError):
        blob_backend.store.write(blob.ref, interrupted())
    assert blob_backend.store.missing([blob.ref]) == [blob.ref]
    assert list(blob_backend.store.iterate()) == []
    if blob_backend.names is not None:
        assert blob_backend.names() == set()


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("wrong_digest", "digest mismatch"),
        ("size_too_small", "size mismatch"),
        ("size_too_large", "size mismatch"),
        ("garbage", "not a zstd frame"),
        ("corrupt_body", "corrupt zstd frame|digest mismatch|size mismatch"),
        ("not_compressed", "not a zstd frame|corrupt zstd frame"),
        ("truncated", "truncated zstd frame"),
        ("two_frames", "trailing data after the zstd frame"),
    ],
)
def test_verifying_store_rejects_mismatched_writes(
    blob_backend: BlobBackend, case: str, message: str
) -> None:
    """RC-004: bytes not matching digest/size, or not one zstd frame, are rejected unpublished."""
    data = b"the real content of a blob " * 50
    good, ref, stored = damaged_blob(data, case)
    store = VerifyingBlobStore(inner=blob_backend.store)
    with pytest.raises(BlobVerificationError, match=message):
        store.write(ref, (stored[i : i + 16] for i in range(0, len(stored), 16)))
    assert store.missing([ref]) == [ref]
    assert store.missing([good.ref]) == [good.ref]
    assert list(store.iterate()) == []
    if blob_backend.names is not None:
        assert blob_backend.names() == set()


def test_corrupt_stored_data_is_detected_on_read(blob_backend: BlobBackend) -> None:
    """RC-004: stored bytes that do not match their ref raise on read (server: DATA_LOSS)."""
    blob = make_blob(b"x" * 5000)
    flipped = bytearray(compress_bytes(b"y" * 5000))
    blob_backend.store.write(blob.ref, [bytes(flipped)])  # the unverified leaf accepts it
    reader = VerifyingBlobStore(inner=blob_backend.store).open_read(blob.ref)
    assert reader is not None
    with reader, pytest.raises(BlobVerificationError, match="digest mismatch"):
        reader.read()


@pytest.mark.parametrize("hash_name", [HashName.BLAKE3, HashName.SHA256])
def test_object_names_carry_layout_version_and_hash(
    blob_backend: BlobBackend, hash_name: HashName
) -> None:
    """SVC-002: objects live at v1/cas/<hash>/<aa>/<hexdigest>-<size>."""
    if blob_backend.names is None:
        pytest.skip("this backend has no raw object names to inspect")
    blob = make_blob(b"layout" * 20, hash_name=hash_name)
    VerifyingBlobStore(inner=blob_backend.store).write(blob.ref, [blob.stored])
    hexdigest = blob.ref.digest.hex
    expected = f"v1/cas/{hash_name.value}/{hexdigest[:2]}/{hexdigest}-{blob.ref.size}"
    assert blob_backend.names() == {expected}
    assert re.fullmatch(r"v1/cas/(blake3|sha256)/[0-9a-f]{2}/[0-9a-f]{64}-\d+", expected)
