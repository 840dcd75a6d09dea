"""BlobVerifier and the stored-form helpers (RC-004, RC-006), beyond the contract suite."""

from __future__ import annotations

import io
import os
from typing import Any

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from cache_service.storage.base import BlobRef, BlobVerificationError
from cache_service.storage.memory import MemoryBlobStore
from cache_service.storage.verifying import (
    BlobVerifier,
    VerifyingBlobStore,
    compress_bytes,
    compress_chunks,
    decompress_chunks,
)
from hazremote.domain.digest import digest_bytes
from hazremote.domain.model import HashName


def _ref(data: bytes, hash_name: HashName = HashName.BLAKE3) -> BlobRef:
    return BlobRef(hash_name=hash_name, digest=digest_bytes(hash_name, data), size=len(data))


def _verify(ref: BlobRef, stored: bytes, step: int) -> None:
    verifier = BlobVerifier(ref)
    for i in range(0, len(stored), step):
        verifier.feed(stored[i : i + step])
    verifier.finish()


@settings(max_examples=40)
@given(
    parts=st.lists(st.binary(max_size=3000), max_size=6),
    step=st.integers(min_value=1, max_value=5000),
    checksum=st.booleans(),
    hash_name=st.sampled_from(list(HashName)),
)
def test_any_single_frame_verifies_however_it_is_chunked(
    parts: list[bytes], step: int, checksum: bool, hash_name: HashName
) -> None:
    """RC-006: one zstd frame — streamed or one-shot, with or without checksum — verifies."""
    data = b"".join(parts)
    streamed = b"".join(compress_chunks(parts, level=1))
    one_shot = zstandard.ZstdCompressor(write_checksum=checksum).compress(data)
    _verify(_ref(data, hash_name), streamed, step)
    _verify(_ref(data, hash_name), one_shot, step)
    assert b"".join(decompress_chunks(io.BytesIO(streamed))) == data


@settings(max_examples=40)
@given(data=st.binary(min_size=1, max_size=2000), cut=st.integers(min_value=1))
def test_any_truncation_is_rejected(data: bytes, cut: int) -> None:
    """RC-004: a stored form cut short anywhere never verifies."""
    stored = compress_bytes(data)
    cut = cut % len(stored)
    with pytest.raises(BlobVerificationError):
        _verify(_ref(data), stored[:cut], 7)


def test_a_zstd_bomb_is_stopped_at_the_declared_size() -> None:
    """RC-004: a tiny frame expanding far beyond its declared size fails while streaming."""
    bomb = zstandard.ZstdCompressor(write_content_size=False).compress(b"\0" * (64 << 20))
    ref = _ref(b"\0" * 10)
    verifier = BlobVerifier(ref)
    with pytest.raises(BlobVerificationError, match="more than its declared 10 bytes"):
        verifier.feed(bomb)


def test_a_frame_with_a_dictionary_id_is_rejected() -> None:
    """RC-006: dictionaries are not supported; such a frame cannot be verified."""
    samples: list[bytes | bytearray | memoryview] = [
        bytes([i % 7]) * 64 + bytes(range(i % 200)) for i in range(400)
    ]
    dictionary = zstandard.train_dictionary(2048, samples)
    stored = zstandard.ZstdCompressor(dict_data=dictionary).compress(samples[5])
    with pytest.raises(BlobVerificationError, match="corrupt zstd frame"):
        _verify(_ref(bytes(samples[5])), stored, 100)


def test_unverified_reads_pass_stored_bytes_through() -> None:
    """verify_reads=False hands out stored bytes as they are (e.g. for admin copy tools)."""
    inner = MemoryBlobStore()
    data = b"abc" * 10
    inner.write(_ref(data), [compress_bytes(b"other")])
    reader = VerifyingBlobStore(inner=inner, verify_reads=False).open_read(_ref(data))
    assert reader is not None
    assert reader.read() == compress_bytes(b"other")


class _RecordingReader(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.sizes: list[int] = []

    def read(self, size: int | None = -1) -> bytes:
        self.sizes.append(-1 if size is None else size)
        return super().read(size)

    def readinto(self, buffer: Any) -> int:
        self.sizes.append(len(memoryview(buffer)))
        return super().readinto(buffer)


def test_decompress_chunks_reads_the_stored_form_in_output_sized_reads() -> None:
    """Issue 5: the stored form is read in reads as large as the output chunks, not zstd's
    128 KiB default (eight passes per MiB through the verifying and counting readers)."""
    data = bytes(range(256)) * 12_000  # ~3 MiB, compressible: the stored form is smaller
    stored = compress_bytes(data)
    reader = _RecordingReader(stored)
    out = b"".join(decompress_chunks(reader, chunk_size=1 << 20))
    assert out == data
    assert reader.sizes
    assert set(reader.sizes) == {1 << 20}


def _rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
def test_rejecting_zstd_bombs_does_not_leak_native_memory() -> None:
    """RC-004 (issue 13, item 1): a rejected bomb frees the decoder's buffers; 2,000 of them
    used to leak ~170 KiB each (335 MiB) because the verifier raised from zstandard's sink."""
    bomb = zstandard.ZstdCompressor(write_content_size=False).compress(b"\0" * (64 << 20))
    ref = _ref(b"\0" * 10)
    before = _rss_bytes()
    for _ in range(2000):
        verifier = BlobVerifier(ref)
        with pytest.raises(BlobVerificationError, match="more than its declared 10 bytes"):
            verifier.feed(bomb)
    assert _rss_bytes() - before < 64 << 20


@settings(max_examples=30)
@given(data=st.binary(min_size=1, max_size=4000), flip=st.integers(0, 31))
def test_any_wrong_content_checksum_is_rejected(data: bytes, flip: int) -> None:
    """RC-004 (issue 13, item 4): the zstd content checksum is checked on write, however the
    frame is chunked; a frame with the right content and a wrong checksum never verifies."""
    frame = bytearray(zstandard.ZstdCompressor(write_checksum=True).compress(data))
    frame[-4 + flip // 8] ^= 1 << (flip % 8)
    for step in (1, 3, len(frame)):
        with pytest.raises(BlobVerificationError, match="checksum"):
            _verify(_ref(data), bytes(frame), step)


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
def test_rejecting_wrong_checksums_does_not_leak_native_memory() -> None:
    """RC-004 (issue 13, items 1 and 4): a checksum failure raised by libzstd inside the
    decoder frees its buffers (unlike an exception raised from its sink)."""
    data = os.urandom(64 << 10) + b"x" * (192 << 10)
    frame = zstandard.ZstdCompressor(write_checksum=True).compress(data)
    bad = frame[:-1] + bytes((frame[-1] ^ 1,))
    ref = _ref(data)
    before = _rss_bytes()
    for _ in range(1500):
        with pytest.raises(BlobVerificationError, match="checksum"):
            _verify(ref, bad, len(bad))
    assert _rss_bytes() - before < 64 << 20
