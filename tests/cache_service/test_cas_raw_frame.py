"""The stored form of identity uploads (RC-006): incompressible bytes become one zstd frame of
raw blocks that zstd and the service's verifier accept as they accept zstd's own frames."""

from __future__ import annotations

import os
from collections.abc import Iterable

import pytest
import zstandard

from cache_service.cas import RAW_BLOCK, BlobLimits, BlobService
from cache_service.storage.base import BlobRef, BlobVerificationError, StoredChunk
from cache_service.storage.memory import MemoryBlobStore
from cache_service.storage.verifying import BlobVerifier, VerifyingBlobStore
from hazremote.cache.manifest import Compression
from hazremote.compression import PROBE_SIZE
from hazremote.domain.digest import digest_bytes
from hazremote.domain.model import HashName

LIMITS = BlobLimits(
    max_blob_size=64 << 20,
    max_batch_items=10,
    max_batch_total_size=1 << 20,
    stream_chunk_size=256 << 10,
)


def _ref(data: bytes) -> BlobRef:
    return BlobRef(
        hash_name=HashName.BLAKE3, digest=digest_bytes(HashName.BLAKE3, data), size=len(data)
    )


def _store(data: bytes, pieces: list[bytes]) -> bytes:
    """Stream ``pieces`` (identity) through the service; the stored form it kept."""
    leaf = MemoryBlobStore()
    service = BlobService(store=VerifyingBlobStore(inner=leaf), limits=LIMITS)
    ref = _ref(data)
    assert service.write_stream(ref, Compression.NONE, iter(pieces)) == len(data)
    reader = leaf.open_read(ref)
    assert reader is not None
    with reader:
        return reader.read()


@pytest.mark.parametrize(
    "sizes",
    [
        [PROBE_SIZE],  # exactly the trial
        [1000, 5, PROBE_SIZE],  # the trial spans several small chunks
        [RAW_BLOCK + 1, RAW_BLOCK - 1, 3 * RAW_BLOCK + 17],  # blocks split inside chunks
        [3 << 20],
    ],
)
def test_incompressible_upload_is_one_frame_of_raw_blocks(sizes: list[int]) -> None:
    pieces = [os.urandom(n) for n in sizes]
    data = b"".join(pieces)
    stored = _store(data, pieces)
    params = zstandard.get_frame_parameters(stored)
    assert params.content_size == len(data)
    assert not params.has_checksum
    assert params.dict_id == 0
    assert params.window_size == 1 << 21  # as zstd level 3 declares for large inputs
    assert zstandard.ZstdDecompressor().decompress(stored) == data
    # Raw blocks: the data itself, 3 header bytes per block of at most 128 KiB per chunk.
    blocks = sum(-(-n // RAW_BLOCK) for n in sizes)
    assert len(stored) == 10 + 3 * blocks + len(data)


def test_compressible_upload_stays_compressed() -> None:
    data = b"0123456789abcdef" * (PROBE_SIZE // 4)
    stored = _store(data, [data[:1000], data[1000:]])
    assert len(stored) < len(data) // 20
    assert zstandard.ZstdDecompressor().decompress(stored) == data


def test_compressible_head_with_random_tail_is_compressed() -> None:
    """The trial decides on the first 64 KiB, as the local cache does."""
    data = b"a" * PROBE_SIZE + os.urandom(PROBE_SIZE)
    stored = _store(data, [data])
    assert len(stored) < len(data) * 0.6
    assert zstandard.ZstdDecompressor().decompress(stored) == data


def test_small_incompressible_upload_is_not_trialled() -> None:
    data = os.urandom(PROBE_SIZE - 1)
    stored = _store(data, [data])
    assert zstandard.ZstdDecompressor().decompress(stored) == data
    assert zstandard.get_frame_parameters(stored).content_size == len(data)


@pytest.mark.parametrize("delta", [-1, 1])
def test_raw_upload_of_the_wrong_size_is_rejected_and_not_stored(delta: int) -> None:
    data = os.urandom(2 * PROBE_SIZE)
    sent = data[:delta] if delta < 0 else data + b"!"
    leaf = MemoryBlobStore()
    service = BlobService(store=VerifyingBlobStore(inner=leaf), limits=LIMITS)
    ref = _ref(data)
    with pytest.raises(BlobVerificationError, match="size mismatch"):
        service.write_stream(ref, Compression.NONE, iter([sent]))
    assert leaf.missing([ref]) == [ref]


def test_raw_upload_with_a_wrong_last_byte_is_rejected_and_not_stored() -> None:
    data = os.urandom(3 * PROBE_SIZE)
    wrong = data[:-1] + bytes([data[-1] ^ 1])
    leaf = MemoryBlobStore()
    service = BlobService(store=VerifyingBlobStore(inner=leaf), limits=LIMITS)
    ref = _ref(data)
    with pytest.raises(BlobVerificationError, match="digest mismatch"):
        service.write_stream(ref, Compression.NONE, iter([wrong[:PROBE_SIZE], wrong[PROBE_SIZE:]]))
    assert leaf.missing([ref]) == [ref]


def test_frame_header_of_a_blob_over_4_gib_records_its_size_in_8_bytes() -> None:
    """The header alone (no 4 GiB of data needed): 8-byte Frame_Content_Size, and the
    verifier's frame walker accepts it."""
    from cache_service.cas import _raw_frame

    size = (4 << 30) + 5
    header = next(_raw_frame(size, iter(())))
    assert len(header) == 4 + 1 + 1 + 8
    assert zstandard.get_frame_parameters(header).content_size == size
    verifier = BlobVerifier(BlobRef(hash_name=HashName.BLAKE3, digest=_ref(b"").digest, size=size))
    verifier.feed(bytes(header) + (1 << 3).to_bytes(3, "little") + b"x")  # one raw block of 1 byte


class _RecordingStore(MemoryBlobStore):
    """A memory leaf that keeps the chunk objects each write was given."""

    def __init__(self) -> None:
        super().__init__()
        self.given: list[StoredChunk] = []

    def write(self, ref: BlobRef, stored: Iterable[StoredChunk]) -> None:
        chunks = list(stored)
        self.given.extend(chunks)
        super().write(ref, chunks)


def test_raw_blocks_reach_the_store_as_views_of_the_received_chunks() -> None:
    """Issue 5: an incompressible identity upload reaches the store as the frame header, then
    each 3-byte block header followed by a view of the block where it arrived (no copy); the
    store keeps exactly the frame."""
    pieces = [os.urandom(3 * RAW_BLOCK + 100), os.urandom(RAW_BLOCK)]
    data = b"".join(pieces)
    leaf = _RecordingStore()
    service = BlobService(store=VerifyingBlobStore(inner=leaf), limits=LIMITS)
    ref = _ref(data)
    received: list[StoredChunk] = [memoryview(pieces[0]), pieces[1]]
    service.write_stream(ref, Compression.NONE, iter(received))
    header, *blocks = leaf.given
    assert len(header) == 10
    assert [len(chunk) for chunk in blocks[::2]] == [3] * 5
    views = blocks[1::2]
    assert all(isinstance(view, memoryview) for view in views)
    assert [view.obj for view in views] == [pieces[0]] * 4 + [pieces[1]]  # type: ignore[union-attr]
    reader = leaf.open_read(ref)
    assert reader is not None
    with reader:
        stored = reader.read()
    assert stored == b"".join(leaf.given)
    assert zstandard.ZstdDecompressor().decompress(stored) == data


def test_zstd_uploads_pass_to_the_store_as_received() -> None:
    """Issue 5: a zstd upload (what the haz client sends) reaches the store as the received
    chunks themselves, views included: nothing is copied on the way."""
    data = os.urandom(2 * PROBE_SIZE)
    frame = zstandard.ZstdCompressor(level=3).compress(data)
    received = [memoryview(frame)[:1000], memoryview(frame)[1000:]]
    leaf = _RecordingStore()
    service = BlobService(store=VerifyingBlobStore(inner=leaf), limits=LIMITS)
    service.write_stream(_ref(data), Compression.ZSTD, iter(received))
    assert len(leaf.given) == 2
    assert all(got is sent for got, sent in zip(leaf.given, received, strict=True))
