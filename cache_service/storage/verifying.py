"""VerifyingBlobStore: a blob is published only when its bytes match its identity (RC-004).

Spec coverage:
* RC-004 — on write, the stored form is decompressed incrementally while its chunks pass
  through to the inner store, hashing and counting the uncompressed bytes; a digest or size
  mismatch raises :class:`BlobVerificationError` *from inside the chunk iterator*, so the
  inner store (which consumes everything before publishing) publishes nothing. Chunks pass
  through as they are (views included: nothing is copied on the way). On read
  (``verify_reads=True``) the same check runs as the caller reads, and the error is raised
  when the end of the stored data is reached (the server answers DATA_LOSS and deletes).
* RC-006 — the stored form is exactly ONE complete zstd frame: a tiny header walker checks
  the frame structure (magic, header, block headers, checksum), so a truncated frame, a
  second frame or trailing bytes are rejected even when the decompressed bytes happen to hash
  right. Decompression writes into a bounded sink (never the whole blob in memory, and a
  "zstd bomb" is stopped within a block of exceeding the declared size, without raising
  through zstandard, which would leak its output buffer: issue 13).
* Issue 13 — a frame's content checksum, when it has one, is verified on write (libzstd
  checks it as its bytes reach the decoder): a frame with the right content and a wrong
  checksum would otherwise be stored, found present by every namespace, and fail every
  reader that checks it.
* :func:`compress_chunks` / :func:`compress_bytes` turn uncompressed bytes into the stored
  form for callers (e.g. the servicer when a client sends identity-encoded data).
Out of scope: size limits (SVC-006, the servicer's), dictionaries (rejected: frames naming a
dictionary cannot be verified here).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, BinaryIO, cast

import zstandard

from cache_service.storage.base import (
    BlobInfo,
    BlobRef,
    BlobStore,
    BlobVerificationError,
    ReadingRaw,
    StoredChunk,
)
from hazremote.compression import ZSTD_LEVEL
from hazremote.domain.digest import Hasher, new_hasher

__all__ = [
    "BlobVerifier",
    "VerifyingBlobStore",
    "compress_bytes",
    "compress_chunks",
    "decompress_chunks",
]

#: RC-006: every stored blob is one zstd frame; the frame magic number (little-endian).
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_OUT_CHUNK = 256 * 1024


#: Largest block of any frame (RFC 8878 §3.1.1.2.4: Block_Maximum_Size).
_BLOCK_MAX = 128 * 1024
#: Raw-block frames are checked without the decoder only up to this window: a compressed
#: block that follows raw ones needs the window's history, kept as references to the chunks.
_DIRECT_WINDOW_MAX = 8 << 20
_BLOCK_RAW, _BLOCK_RLE, _BLOCK_COMPRESSED = 0, 1, 2


class _FrameWalker:
    """Follows the structure of one zstd frame (RFC 8878 §3.1.1) without decompressing.

    ``feed`` returns how many bytes of the chunk belong to the frame; the rest is trailing
    data. Only headers are parsed; block contents are skipped by length, so this is cheap.
    The ``listener`` passed to ``feed`` (the verifier) hears of the frame header, each block
    header and the content bytes of each block as they pass. It is passed, not kept: a walker
    holding its verifier would make a reference cycle, and the verifier's decoder (a window
    of native memory, megabytes) would live until the cyclic garbage collector ran (issue 13).
    """

    def __init__(self) -> None:
        self._need = 5  # magic + frame header descriptor
        self._header = bytearray()
        self._frame_header = b""
        self._state = "magic"
        self._skip = 0
        self._checksum = False
        self._last = False
        self.done = False

    def feed(self, chunk: memoryview, listener: _Listener) -> int:
        pos = 0
        while pos < len(chunk) and not self.done:
            if self._skip:
                step = min(self._skip, len(chunk) - pos)
                if self._state == "content":
                    listener.content(chunk[pos : pos + step])
                else:  # the frame's content checksum
                    listener.checksum(chunk[pos : pos + step])
                self._skip -= step
                pos += step
                if not self._skip:
                    self._end_of_skip()
                continue
            take = min(self._need - len(self._header), len(chunk) - pos)
            self._header += chunk[pos : pos + take]
            pos += take
            if len(self._header) == self._need:
                self._advance(listener)
        return pos

    def _end_of_skip(self) -> None:
        if self._state == "checksum":
            self.done = True
        elif self._last:  # the last block's content ended
            self._end_of_blocks()
        else:
            self._begin_block()

    def _end_of_blocks(self) -> None:
        if self._checksum:
            self._state, self._skip = "checksum", 4
        else:
            self.done = True

    def _advance(self, listener: _Listener) -> None:
        header = bytes(self._header)
        if self._state == "magic":
            if header[:4] != ZSTD_MAGIC:
                raise BlobVerificationError("stored data is not a zstd frame (bad magic number)")
            descriptor = header[4]
            if descriptor & 0x08:
                raise BlobVerificationError("corrupt zstd frame header (reserved bit set)")
            fcs_flag, single_segment = descriptor >> 6, bool(descriptor & 0x20)
            self._checksum = bool(descriptor & 0x04)
            dict_id_size = (0, 1, 2, 4)[descriptor & 0x03]
            fcs_size = (1 if single_segment else 0, 2, 4, 8)[fcs_flag]
            rest = (0 if single_segment else 1) + dict_id_size + fcs_size
            self._frame_header = header
            self._state, self._need, self._header = "frame_header", rest, bytearray()
            if rest == 0:
                listener.frame_header(self._frame_header)
                self._begin_block()
            return
        if self._state == "frame_header":
            self._frame_header += header
            listener.frame_header(self._frame_header)
            self._begin_block()
            return
        # a block header: 3 bytes little-endian
        value = int.from_bytes(header, "little")
        last, block_type, size = value & 1, (value >> 1) & 3, value >> 3
        if block_type == 3:
            raise BlobVerificationError("corrupt zstd frame (reserved block type)")
        listener.block(header, block_type, size)
        self._last = bool(last)
        content = 1 if block_type == _BLOCK_RLE else size
        if content:
            self._state, self._skip = "content", content
        elif last:
            self._end_of_blocks()
        else:
            self._begin_block()

    def _begin_block(self) -> None:
        self._state, self._need, self._header = "block", 3, bytearray()


class _Listener:
    """What :class:`_FrameWalker` tells as it walks (see :class:`BlobVerifier`)."""

    def frame_header(self, header: bytes) -> None:
        raise NotImplementedError

    def block(self, header: bytes, block_type: int, size: int) -> None:
        raise NotImplementedError

    def content(self, view: memoryview) -> None:
        raise NotImplementedError

    def checksum(self, view: memoryview) -> None:
        raise NotImplementedError


class _HashingSink:
    """Receives decompressed output from zstandard in bounded pieces.

    :meth:`write` never raises: an exception raised into zstandard's ``stream_writer`` from
    its sink leaks the writer's output buffer (``write_size`` bytes of native memory, never
    freed; issue 13). Past the limit it only counts; :meth:`check` raises, called by the
    verifier after each write to the decoder — one block header or block content, so at most
    a block or two (≤ 256 KiB) is decoded beyond the limit before a bomb is stopped.
    """

    def __init__(self, hasher: Hasher, limit: int) -> None:
        self.hasher = hasher
        self.limit = limit
        self.count = 0

    def write(self, data: Any) -> int:
        self.count += len(data)
        if self.count <= self.limit:
            self.hasher.update(data)
        return len(data)

    def check(self) -> None:
        if self.count > self.limit:
            raise BlobVerificationError(
                f"size mismatch: blob decompresses to more than its declared {self.limit} bytes"
            )


def _frame_params(header: bytes) -> tuple[int | None, int | None]:
    """``(window size, content size)`` of a frame header (RFC 8878 §3.1.1.1); the window is
    None when the frame names a dictionary or carries a checksum (then only the decoder
    checks it), the content size None when not recorded."""
    descriptor = header[4]
    fcs_flag, single_segment = descriptor >> 6, bool(descriptor & 0x20)
    dict_id_size = (0, 1, 2, 4)[descriptor & 0x03]
    pos = 5
    window: int | None = None
    if not single_segment:
        exponent, mantissa = header[pos] >> 3, header[pos] & 7
        base = 1 << (10 + exponent)
        window = base + (base // 8) * mantissa
        pos += 1
    pos += dict_id_size
    fcs_size = (1 if single_segment else 0, 2, 4, 8)[fcs_flag]
    content: int | None = None
    if fcs_size:
        content = int.from_bytes(header[pos : pos + fcs_size], "little")
        if fcs_size == 2:
            content += 256
    if single_segment:
        window = content
    if dict_id_size or descriptor & 0x04:
        window = None
    return window, content


class BlobVerifier(_Listener):
    """Checks a stored form, fed chunk by chunk, against a :class:`BlobRef`.

    Call :meth:`feed` for every chunk in order and :meth:`finish` at the end; both raise
    :class:`BlobVerificationError` at the first sign of a mismatch.

    Raw and RLE blocks hold their content as it is: while a frame has only those, their bytes
    are hashed where they lie in the fed chunks, without the decoder (which would copy each
    byte twice; incompressible blobs are stored as raw-block frames, issue 5). At the first
    compressed block the decoder takes over, given the window's history as a raw-content
    prefix and the rest of the frame after an equivalent header. That history is kept as
    references to the fed chunks (at most a window and a chunk; the decoder would hold a
    window too). Frames naming a dictionary or carrying a checksum, or with a window over
    8 MiB, go through the decoder from the start.
    """

    def __init__(self, ref: BlobRef) -> None:
        self._ref = ref
        self._walker = _FrameWalker()
        self._sink = _HashingSink(new_hasher(ref.hash_name), ref.size)
        self._writer: Any = None  # the decoder's stream writer, once it decodes
        self._direct = False  # hashing raw/RLE block contents without the decoder
        self._header = b""
        self._window = 0
        self._block_max = 0
        self._content_size: int | None = None
        self._rle = False
        self._rle_size = 0
        #: The last ``window`` bytes of content (direct mode), as views of the fed chunks.
        self._history: deque[memoryview | bytes] = deque()
        self._history_bytes = 0
        #: The chunk being fed is immutable (bytes, or a view of bytes): views of it may be kept.
        self._owned = True
        self.stored_bytes = 0

    # -- the walker's events ---------------------------------------------------------------

    def frame_header(self, header: bytes) -> None:
        self._header = header
        window, self._content_size = _frame_params(header)
        if window is not None and window <= _DIRECT_WINDOW_MAX:
            self._direct = True
            self._window = window
            self._block_max = min(window, _BLOCK_MAX)
        else:
            self._start_decoder(header)

    def block(self, header: bytes, block_type: int, size: int) -> None:
        if not self._direct:
            self._decode(header)
            return
        if block_type == _BLOCK_COMPRESSED:
            self._leave_direct()
            self._decode(header)
            return
        if size > self._block_max:
            raise BlobVerificationError(
                f"corrupt zstd frame: a {size}-byte block exceeds the frame's "
                f"{self._block_max}-byte maximum"
            )
        if block_type == _BLOCK_RLE:
            self._rle_size = size
        self._rle = block_type == _BLOCK_RLE

    def content(self, view: memoryview) -> None:
        if not self._direct:
            self._decode(view)
            return
        if self._rle:
            data: memoryview | bytes = bytes(view) * self._rle_size
        else:
            data = view if self._owned else bytes(view)
        self._sink.write(data)
        self._sink.check()
        self._remember(data)

    def checksum(self, view: memoryview) -> None:
        # Issue 13: a frame's content checksum is checked on write. A frame carrying one is
        # decoded from its start (``_frame_params``), and libzstd verifies the checksum when
        # its bytes reach the decoder; a wrong one stored would pass every write check, then
        # fail every reader that checks it (and an identity read would delete the blob).
        self._decode(view)

    # -- direct mode -----------------------------------------------------------------------

    def _remember(self, data: memoryview | bytes) -> None:
        history = self._history
        history.append(data)
        self._history_bytes += len(data)
        while history and self._history_bytes - len(history[0]) >= self._window:
            self._history_bytes -= len(history.popleft())

    def _leave_direct(self) -> None:
        """Hand the rest of the frame to the decoder: an equivalent frame header (the same
        window; a single-segment frame keeps the rest of its content size as its window), the
        content so far as its prefix."""
        self._direct = False
        done = self._sink.count
        if not done:  # nothing before: the decoder sees the frame as it is
            self._start_decoder(self._header)
            return
        history = b"".join(self._history)[-self._window :]
        self._history.clear()
        prefix = zstandard.ZstdCompressionDict(history, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
        descriptor = self._header[4]
        if descriptor & 0x20:  # Single_Segment: Window_Size is the content size
            assert self._content_size is not None  # a single-segment frame always records it
            rest = self._content_size - done
            if rest < 0:
                raise BlobVerificationError("corrupt zstd frame: more content than its header says")
            header = ZSTD_MAGIC + b"\xe0" + rest.to_bytes(8, "little")
            self._content_size = None  # the decoder checks the rest
        else:  # the same Window_Descriptor; no content size (finish() checks it)
            header = ZSTD_MAGIC + b"\x00" + self._header[5:6]
        self._start_decoder(header, prefix)

    # -- the decoder -----------------------------------------------------------------------

    def _start_decoder(self, header: bytes, prefix: Any = None) -> None:
        # zstandard's stubs want a real file; any object with write() works.
        sink: Any = self._sink
        decompressor = (
            zstandard.ZstdDecompressor()
            if prefix is None
            else zstandard.ZstdDecompressor(dict_data=prefix)
        )
        self._writer = decompressor.stream_writer(
            sink, write_size=_OUT_CHUNK, write_return_read=True, closefd=False
        )
        self._decode(header)

    def _decode(self, data: bytes | memoryview) -> None:
        try:
            self._writer.write(data)
        except zstandard.ZstdError as exc:
            raise BlobVerificationError(f"corrupt zstd frame: {exc}") from exc
        self._sink.check()

    # -- the API ---------------------------------------------------------------------------

    def feed(self, chunk: bytes | memoryview) -> None:
        view = memoryview(chunk).cast("B")
        # A view of bytes (a received message, a raw-frame block) is as immutable as bytes.
        self._owned = isinstance(view.obj, bytes)
        self.stored_bytes += len(view)
        if self._walker.done:
            if len(view):
                raise BlobVerificationError("trailing data after the zstd frame")
            return
        used = self._walker.feed(view, self)
        if used < len(view):
            raise BlobVerificationError("trailing data after the zstd frame")

    def finish(self) -> None:
        if not self._walker.done:
            raise BlobVerificationError("truncated zstd frame (stored data ends mid-frame)")
        if self._writer is not None:
            try:
                self._writer.flush()
            except zstandard.ZstdError as exc:
                raise BlobVerificationError(f"corrupt zstd frame: {exc}") from exc
            self._sink.check()
        self._history.clear()
        ref = self._ref
        count = self._sink.count
        if self._content_size is not None and count != self._content_size:
            raise BlobVerificationError(
                f"corrupt zstd frame: {count} bytes of content, its header says "
                f"{self._content_size}"
            )
        if count != ref.size:
            raise BlobVerificationError(
                f"size mismatch: blob decompresses to {count} bytes, expected {ref.size}"
            )
        actual = self._sink.hasher.digest()
        if actual != ref.digest.raw:
            raise BlobVerificationError(
                f"digest mismatch: {ref.hash_name.value} of the bytes is {actual.hex()}, "
                f"expected {ref.digest.hex}"
            )


def _verified(ref: BlobRef, stored: Iterable[StoredChunk]) -> Iterator[StoredChunk]:
    verifier = BlobVerifier(ref)
    for chunk in stored:
        verifier.feed(chunk)
        yield chunk
    verifier.finish()


class _VerifyingReader(ReadingRaw):
    """Passes the stored form through, raising BlobVerificationError at its end if corrupt.

    :meth:`read` hands out the chunks the inner reader returns as they are (after feeding
    them to the verifier): no buffer in between, so a chunk is not copied (issue 5). The inner
    readers of every store are buffered (``read(n)`` returns ``n`` bytes unless at the end).
    """

    def __init__(self, inner: BinaryIO, ref: BlobRef) -> None:
        self._inner = inner
        self._verifier = BlobVerifier(ref)
        self._finished = False

    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` bytes (all the rest when negative), fewer only at the end, where
        the blob is checked (raises :class:`BlobVerificationError`)."""
        if size is None or size < 0:
            return self.readall()
        if size == 0 or self._finished:
            return b""
        data = self._inner.read(size)
        while len(data) < size:
            # Short: the end, or an inner reader that returns less (then read on, so a chunk
            # is short only at the end, as from a buffered reader).
            more = self._inner.read(size - len(data))
            if not more:
                if data:
                    self._verifier.feed(data)
                self._finished = True
                self._verifier.finish()
                return data
            data += more
        self._verifier.feed(data)
        return data

    def readall(self) -> bytes:
        chunks = []
        while chunk := self.read(_OUT_CHUNK):
            chunks.append(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        self._inner.close()
        super().close()


class VerifyingBlobStore:
    """Decorator: rejects writes whose bytes do not match their ref; optionally checks reads.

    Args:
        inner: the store that holds the blobs.
        verify_reads: check stored data as it is read (raise at its end when corrupt).
    """

    def __init__(self, *, inner: BlobStore, verify_reads: bool = True) -> None:
        self._inner = inner
        self._verify_reads = verify_reads

    def missing(self, refs: Sequence[BlobRef]) -> list[BlobRef]:
        return self._inner.missing(refs)

    def open_read(self, ref: BlobRef) -> BinaryIO | None:
        reader = self._inner.open_read(ref)
        if reader is None or not self._verify_reads:
            return reader
        return cast(BinaryIO, _VerifyingReader(reader, ref))

    def write(self, ref: BlobRef, stored: Iterable[StoredChunk]) -> None:
        self._inner.write(ref, _verified(ref, stored))

    def delete(self, ref: BlobRef) -> None:
        self._inner.delete(ref)

    def iterate(self) -> Iterator[BlobInfo]:
        return self._inner.iterate()


def compress_chunks(
    chunks: Iterable[bytes | memoryview], *, level: int = ZSTD_LEVEL, size: int | None = None
) -> Iterator[bytes]:
    """Compress uncompressed chunks into the stored form (one zstd frame), streaming.

    Args:
        chunks: the uncompressed bytes, in order.
        level: zstd level (3: ~160 MB/s, ratio ~4 on build output).
        size: the total uncompressed size when known (recorded in the frame header).
    """
    compressor = zstandard.ZstdCompressor(level=level, write_checksum=False)
    cobj = compressor.compressobj(size=-1 if size is None else size)
    for chunk in chunks:
        out = cobj.compress(chunk)
        if out:
            yield out
    tail = cobj.flush()
    if tail:
        yield tail


def compress_bytes(data: bytes, *, level: int = ZSTD_LEVEL) -> bytes:
    """The stored form of ``data`` (one zstd frame with its content size)."""
    return zstandard.ZstdCompressor(level=level).compress(data)


def decompress_chunks(stored: BinaryIO, *, chunk_size: int = _OUT_CHUNK) -> Iterator[bytes]:
    """Decompress a stored form read from ``stored`` in bounded chunks."""
    # Read the stored form in chunks as large as the output's: zstd's default (128 KiB) costs
    # eight passes through the verifying and counting readers per MiB.
    reader = zstandard.ZstdDecompressor().stream_reader(stored, read_size=chunk_size, closefd=False)
    while True:
        chunk = reader.read(chunk_size)
        if not chunk:
            return
        yield chunk
