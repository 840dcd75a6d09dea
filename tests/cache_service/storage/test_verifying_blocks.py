"""BlobVerifier over frames mixing raw, RLE and compressed blocks (RC-004, RC-006, issue 5).

Raw and RLE blocks are hashed where they lie, without the decoder; at the first compressed
block the decoder takes over with the content so far as its prefix. Whatever the blocks, the
verifier must agree with zstd itself: a frame verifies exactly when zstd decodes it, alone,
to the blob's bytes."""

from __future__ import annotations

import random

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from cache_service.storage.base import BlobRef, BlobVerificationError
from cache_service.storage.verifying import BlobVerifier
from hazremote.domain.digest import digest_bytes
from hazremote.domain.model import HashName

KIB = 1024


def _ref(data: bytes, hash_name: HashName = HashName.BLAKE3) -> BlobRef:
    return BlobRef(hash_name=hash_name, digest=digest_bytes(hash_name, data), size=len(data))


def _verifies(ref: BlobRef, stored: bytes, step: int) -> bool:
    verifier = BlobVerifier(ref)
    try:
        for i in range(0, len(stored), step):
            verifier.feed(stored[i : i + step])
        verifier.finish()
    except BlobVerificationError:
        return False
    return True


def _zstd_verifies(data: bytes, stored: bytes) -> bool:
    """The reference: zstd decodes ``stored`` as exactly one frame holding ``data``."""
    try:
        reader = zstandard.ZstdDecompressor().decompressobj()
        out = reader.decompress(stored)
        return out == data and reader.eof and not reader.unused_data
    except zstandard.ZstdError:
        return False


def _content(segments: list[tuple[str, int, int]], seed: int) -> bytes:
    """Random (incompressible: raw blocks), repeated-byte (RLE blocks) and copied (compressed
    blocks referring back into raw content) segments."""
    rng = random.Random(seed)
    out = bytearray()
    for kind, size, back in segments:
        if kind == "random":
            out += rng.randbytes(size)
        elif kind == "byte":
            out += bytes([rng.randrange(256)]) * size
        elif out:  # a copy of earlier content
            start = max(0, len(out) - back - size)
            out += out[start : start + size]
    return bytes(out)


#: Sizes around the block size (128 KiB), so frames mix blocks of every type.
_SIZES = st.builds(
    lambda kib, extra: kib * KIB + extra,
    st.integers(min_value=0, max_value=300),
    st.integers(min_value=0, max_value=KIB),
)
_SEGMENTS = st.lists(
    st.tuples(st.sampled_from(["random", "byte", "copy"]), _SIZES, _SIZES),
    max_size=6,
)


@settings(max_examples=60, deadline=None)
@given(
    segments=_SEGMENTS,
    seed=st.integers(min_value=0, max_value=1000),
    level=st.sampled_from([-5, 1, 3, 19]),
    content_size=st.booleans(),
    checksum=st.booleans(),
    step=st.sampled_from([1000, 64 * KIB, 1 << 20, 1 << 30]),
)
def test_frames_of_any_blocks_verify(
    *,
    segments: list[tuple[str, int, int]],
    seed: int,
    level: int,
    content_size: bool,
    checksum: bool,
    step: int,
) -> None:
    data = _content(segments, seed)
    compressor = zstandard.ZstdCompressor(
        level=level, write_content_size=content_size, write_checksum=checksum
    )
    stored = compressor.compress(data)
    assert _verifies(_ref(data), stored, step)


@settings(max_examples=150, deadline=None)
@given(
    segments=_SEGMENTS,
    seed=st.integers(min_value=0, max_value=1000),
    level=st.sampled_from([1, 3]),
    content_size=st.booleans(),
    flips=st.lists(
        st.tuples(st.floats(min_value=0, max_value=1, exclude_max=True), st.integers(1, 255)),
        min_size=1,
        max_size=3,
    ),
    cut=st.sampled_from([None, 1, 3, 4]),
)
def test_damaged_frames_are_judged_as_zstd_judges_them(
    *,
    segments: list[tuple[str, int, int]],
    seed: int,
    level: int,
    content_size: bool,
    flips: list[tuple[float, int]],
    cut: int | None,
) -> None:
    """Flipped bytes anywhere (headers, block headers, contents) or a cut end: the verifier
    accepts exactly what zstd decodes to the blob's bytes (never more, never less)."""
    data = _content(segments, seed)
    stored = bytearray(
        zstandard.ZstdCompressor(level=level, write_content_size=content_size).compress(data)
    )
    # Damage the headers more often than the contents: they decide the structure.
    for where, mask in flips:
        index = int(where * where * len(stored))
        stored[index] ^= mask
    damaged = bytes(stored[: len(stored) - cut] if cut else stored)
    assert _verifies(_ref(data), damaged, 64 * KIB) == _zstd_verifies(data, damaged)


def _raw_block_frame(data: bytes, *, window_byte: int, block: int) -> bytes:
    """A frame of raw blocks as the service writes for incompressible uploads."""
    header = zstandard.FRAME_HEADER + bytes((0x80, window_byte)) + len(data).to_bytes(4, "little")
    parts = [header]
    for start in range(0, len(data), block):
        piece = data[start : start + block]
        last = start + block >= len(data)
        parts.append(((len(piece) << 3) | last).to_bytes(3, "little") + piece)
    return b"".join(parts)


def test_a_raw_block_frame_is_hashed_without_the_decoder() -> None:
    """Issue 5: the service's raw-block frames never reach the decoder (whose copies cost as
    much as the hash); they verify all the same, and a flipped content byte is caught."""
    data = random.Random(5).randbytes(1 << 20)
    stored = _raw_block_frame(data, window_byte=0x58, block=128 * KIB)  # 2 MiB window
    verifier = BlobVerifier(_ref(data))
    for i in range(0, len(stored), 100_000):
        verifier.feed(stored[i : i + 100_000])
    verifier.finish()
    assert verifier._writer is None
    damaged = bytearray(stored)
    damaged[500_000] ^= 1
    assert not _verifies(_ref(data), bytes(damaged), 100_000)


def test_a_raw_block_larger_than_the_frame_allows_is_rejected() -> None:
    """RC-006: zstd refuses a block over min(window, 128 KiB); so does the verifier."""
    data = random.Random(6).randbytes(256 * KIB)
    stored = _raw_block_frame(data, window_byte=0x58, block=256 * KIB)
    assert not _zstd_verifies(data, stored)
    verifier = BlobVerifier(_ref(data))
    with pytest.raises(BlobVerificationError, match="exceeds"):
        verifier.feed(stored)


def test_mutable_chunks_may_be_reused_by_the_caller() -> None:
    """A caller feeding one reused buffer: the history the decoder needs is not a view of it."""
    rng = random.Random(7)
    head = rng.randbytes(300 * KIB)
    data = head + head[: 200 * KIB]  # compressed blocks referring back to raw ones
    stored = zstandard.ZstdCompressor(level=3).compress(data)
    verifier = BlobVerifier(_ref(data))
    buffer = bytearray(50 * KIB)
    for i in range(0, len(stored), len(buffer)):
        piece = stored[i : i + len(buffer)]
        view = memoryview(buffer)[: len(piece)]
        view[:] = piece
        verifier.feed(view)
        view[:] = b"\0" * len(piece)
    verifier.finish()


def test_views_of_bytes_are_kept_as_they_are() -> None:
    """Issue 5: views of immutable bytes (received messages, raw-frame blocks) are as safe to
    keep as bytes: the history of raw blocks holds them, not copies, and the frame verifies
    when a compressed block later refers back to them."""
    rng = random.Random(8)
    head = rng.randbytes(300 * KIB)
    data = head + head[: 200 * KIB]
    stored = zstandard.ZstdCompressor(level=3).compress(data)
    view = memoryview(stored)
    verifier = BlobVerifier(_ref(data))
    verifier.feed(view[: 200 * KIB])  # raw blocks only, so far
    assert verifier._writer is None
    assert verifier._history
    assert all(isinstance(kept, memoryview) and kept.obj is stored for kept in verifier._history)
    for i in range(200 * KIB, len(stored), 50 * KIB):
        verifier.feed(view[i : i + 50 * KIB])
    verifier.finish()
    assert verifier._writer is not None  # the compressed block went through the decoder
