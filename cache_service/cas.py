"""The content-addressed store as the service sees it: limits, wire encodings, verification.

Everything here is synchronous and blocking (the storage ports are); the servicers run it in
a thread pool. Blobs travel between this module and the servicers as :class:`BlobRef` values
and plain bytes (uploads: views of the received messages) — never protobuf messages.

Spec coverage:
* RC-004 — the :class:`BlobStore` given is a verifying one (``open_storage`` always wraps
  in :class:`~cache_service.storage.verifying.VerifyingBlobStore`): every write is verified
  while it streams, before publishing, and a mismatch raises ``BlobVerificationError`` with
  nothing visible. Reads are verified as they stream; stored bytes found corrupt are deleted
  here and reported as :class:`~cache_service.errors.CorruptBlobError` (``DATA_LOSS``).
* RC-006 — the stored form is one zstd frame; ``identity`` uploads are compressed into it
  (with the content size in the frame header) or, when a trial on their first 64 KiB saves
  under 10 % (the local cache's rule), written into it as raw blocks — what zstd itself emits
  for incompressible input, without its cost or a copy (block headers between views of the
  received chunks); ``zstd`` uploads pass through as received. Reads send the
  stored frame as is when the client accepts zstd, otherwise decompressed bytes; a read from
  an ``offset`` decompresses, skips, and re-encodes. No blob is held whole in memory outside
  the batch calls, whose total size is bounded.
* RC-007 — :meth:`BlobService.find_missing`.
* SVC-006 — maximum blob size, batch items and batch total size, checked before any work;
  the decompressed size of an upload is bounded by its declared size (no zstd bomb).
Out of scope: gRPC, the stores themselves, manifests (:mod:`cache_service.manifests`).
"""

from __future__ import annotations

import itertools
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

import zstandard

from cache_service.errors import (
    BlobAbsentError,
    CorruptBlobError,
    InvalidRequestError,
    LimitExceededError,
)
from cache_service.storage.base import BlobRef, BlobStore, BlobVerificationError, StoredChunk
from cache_service.storage.verifying import ZSTD_MAGIC, compress_chunks, decompress_chunks
from hazremote.cache.manifest import Compression
from hazremote.compression import PROBE_SIZE, ZSTD_LEVEL, compression_pays

__all__ = [
    "BlobLimits",
    "BlobReadStream",
    "BlobService",
    "ReadOutcome",
    "WriteItem",
]

#: zstd's largest block (Block_Maximum_Size).
RAW_BLOCK = 128 * 1024
#: Window_Descriptor of a raw-block frame: 2**21 bytes, what zstd level 3 declares for large
#: inputs. Raw blocks need no window, but decoders size their buffers by it: with windows under
#: the 1 MiB read chunk, verifying reads cost 3x the CPU (page faults in the decoder's output
#: path), so the window matches the compressed frames'.
_RAW_WINDOW = (21 - 10) << 3


@dataclass(frozen=True, slots=True, kw_only=True)
class BlobLimits:
    """SVC-006 limits that concern blobs (sizes are uncompressed bytes)."""

    max_blob_size: int
    max_batch_items: int
    max_batch_total_size: int
    stream_chunk_size: int


@dataclass(frozen=True, slots=True, kw_only=True)
class WriteItem:
    """One blob of a batch upload."""

    ref: BlobRef
    data: bytes
    encoding: Compression


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadOutcome:
    """One blob of a batch read: its bytes, or the error that item ended in."""

    ref: BlobRef
    data: bytes = b""
    encoding: Compression = Compression.NONE
    error: Exception | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class BlobReadStream:
    """A blob being streamed: the encoding of every chunk, and the chunks (lazily read)."""

    encoding: Compression
    #: A generator: close it to release the stored data early.
    chunks: Generator[bytes, None, None]


#: Bytes as they arrive: a chunk of a message, or a view of one (no copy).
Buffer = bytes | memoryview


def _stored_form(
    ref: BlobRef, chunks: Iterable[Buffer], encoding: Compression
) -> Iterable[StoredChunk]:
    """RC-006: the stored form (one zstd frame) of an upload's wire chunks, as views of them
    where it can (zstd passes through as received; a raw-block frame is headers between
    views): the store writes them where they lie (the received messages are immutable)."""
    if encoding is Compression.ZSTD:
        return chunks
    return _encoded(ref, _exactly(ref, chunks))


def _encoded(ref: BlobRef, chunks: Iterator[Buffer]) -> Iterator[StoredChunk]:
    """Identity chunks as one zstd frame: compressed, or raw blocks when a trial on the first
    64 KiB saves under 10 % (the local cache's rule, docs/decisions.md)."""
    head: list[Buffer] = []
    seen = 0
    if ref.size >= PROBE_SIZE:
        for chunk in chunks:
            head.append(chunk)
            seen += len(chunk)
            if seen >= PROBE_SIZE:
                break
    rest = itertools.chain(head, chunks)
    if seen >= PROBE_SIZE and not _pays(head):
        yield from _raw_frame(ref.size, rest)
    else:
        yield from compress_chunks(rest, level=ZSTD_LEVEL, size=ref.size)


def _pays(head: Sequence[Buffer]) -> bool:
    """Whether zstd shrinks the first :data:`PROBE_SIZE` of ``head`` by at least 10 %."""
    sample = bytearray()
    for chunk in head:
        sample += memoryview(chunk)[: PROBE_SIZE - len(sample)]
    packed = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(sample)
    return compression_pays(len(sample), len(packed))


def _raw_frame(size: int, chunks: Iterable[Buffer]) -> Iterator[StoredChunk]:
    """One zstd frame of raw (stored) blocks holding ``size`` bytes (RFC 8878 §3.1.1): what
    zstd itself writes for incompressible input, as the frame header, then each 3-byte block
    header followed by a view of the block's bytes in ``chunks`` (no copy; the disk store
    gathers them into one ``writev``). The caller checks that ``chunks`` hold exactly
    ``size`` bytes (the last block carries the end mark)."""
    if size < 1 << 32:  # Frame_Content_Size in 4 bytes, else 8; no checksum, no dictionary
        header = ZSTD_MAGIC + bytes((0x80, _RAW_WINDOW)) + size.to_bytes(4, "little")
    else:
        header = ZSTD_MAGIC + bytes((0xC0, _RAW_WINDOW)) + size.to_bytes(8, "little")
    yield header
    done = 0
    for chunk in chunks:
        view = memoryview(chunk)
        for start in range(0, len(view), RAW_BLOCK):
            block = view[start : start + RAW_BLOCK]
            done += len(block)
            # Block_Header: Last_Block bit, Block_Type 0 (raw), Block_Size.
            yield ((len(block) << 3) | (done == size)).to_bytes(3, "little")
            yield block


def _exactly(ref: BlobRef, chunks: Iterable[Buffer]) -> Iterator[Buffer]:
    """Identity chunks, checked against the declared size before zstd sees a wrong one (the
    frame header announces the size; the verifying store checks the digest)."""
    seen = 0
    for chunk in chunks:
        seen += len(chunk)
        if seen > ref.size:
            raise BlobVerificationError(
                f"size mismatch: blob {ref.digest} has more than the declared {ref.size} bytes"
            )
        yield chunk
    if seen != ref.size:
        raise BlobVerificationError(
            f"size mismatch: blob {ref.digest} has {seen} bytes, declared {ref.size}"
        )


class BlobService:
    """Blob operations of the ContentStore API over a :class:`BlobStore` port."""

    def __init__(self, *, store: BlobStore, limits: BlobLimits) -> None:
        self._store = store
        self.limits = limits

    # -- checks ---------------------------------------------------------------------------

    def check_batch(self, refs: Sequence[BlobRef], *, payload: bool) -> None:
        """SVC-006: item count, and (for calls that carry bytes) total uncompressed size."""
        if len(refs) > self.limits.max_batch_items:
            raise LimitExceededError(
                f"{len(refs)} items in one batch; the limit is {self.limits.max_batch_items}"
            )
        if payload:
            total = sum(ref.size for ref in refs)
            if total > self.limits.max_batch_total_size:
                raise LimitExceededError(
                    f"batch of {total} bytes; the limit is {self.limits.max_batch_total_size}"
                    " (use ReadBlob/WriteBlob streams for large blobs)"
                )

    def check_blob_size(self, ref: BlobRef) -> None:
        if ref.size > self.limits.max_blob_size:
            raise LimitExceededError(
                f"blob {ref.digest} has {ref.size} bytes; the limit is {self.limits.max_blob_size}"
            )

    # -- RC-007 ---------------------------------------------------------------------------

    def find_missing(self, refs: Sequence[BlobRef]) -> list[BlobRef]:
        self.check_batch(refs, payload=False)
        return self._store.missing(refs)

    def contains(self, ref: BlobRef) -> bool:
        return not self._store.missing([ref])

    # -- writes ---------------------------------------------------------------------------

    def write_batch(self, items: Sequence[WriteItem]) -> list[Exception | None]:
        """Store each item on its own; returns per item None (stored) or its error.

        One ``missing`` call covers the whole batch: items already present succeed at once.
        """
        refs = [item.ref for item in items]
        self.check_batch(refs, payload=True)
        absent = set(self._store.missing(refs))
        results: list[Exception | None] = []
        for item in items:
            try:
                self.check_blob_size(item.ref)
                if item.ref in absent:
                    self._store.write(item.ref, _stored_form(item.ref, [item.data], item.encoding))
            except Exception as exc:  # each item succeeds or fails on its own (wire contract)
                results.append(exc)
            else:
                results.append(None)
        return results

    def write_stream(self, ref: BlobRef, encoding: Compression, chunks: Iterable[Buffer]) -> int:
        """Verify and store one blob from its wire chunks; returns its size (RC-004).

        A blob already present succeeds at once (its remaining chunks are not read).
        """
        self.check_blob_size(ref)
        if self.contains(ref):
            return ref.size
        self._store.write(ref, _stored_form(ref, chunks, encoding))
        return ref.size

    # -- reads ----------------------------------------------------------------------------

    def read_batch(
        self, refs: Sequence[BlobRef], accepted: Sequence[Compression]
    ) -> list[ReadOutcome]:
        """Read small blobs whole (bounded by the batch total), verified; per-item errors."""
        self.check_batch(refs, payload=True)
        zstd = Compression.ZSTD in accepted
        outcomes: list[ReadOutcome] = []
        for ref in refs:
            try:
                self.check_blob_size(ref)
                stream = self.open_stream(ref, offset=0, accepted=accepted)
                data = b"".join(stream.chunks)
            except Exception as exc:  # each item succeeds or fails on its own (wire contract)
                outcomes.append(ReadOutcome(ref=ref, error=exc))
            else:
                encoding = Compression.ZSTD if zstd else Compression.NONE
                outcomes.append(ReadOutcome(ref=ref, data=data, encoding=encoding))
        return outcomes

    def open_stream(
        self, ref: BlobRef, *, offset: int, accepted: Sequence[Compression]
    ) -> BlobReadStream:
        """Open a blob for streaming from uncompressed ``offset``.

        The chunks are verified as they are produced; on a mismatch the stored blob is
        deleted and iteration raises :class:`CorruptBlobError` (RC-004).

        Raises:
            InvalidRequestError: ``offset`` outside ``0..size``.
            BlobAbsentError: the store does not hold the blob.
        """
        if not 0 <= offset <= ref.size:
            raise InvalidRequestError(f"offset {offset} outside the blob's 0..{ref.size} bytes")
        handle = self._store.open_read(ref)
        if handle is None:
            raise BlobAbsentError(f"blob {ref.digest} ({ref.size} bytes) not found")
        zstd = Compression.ZSTD in accepted
        if zstd and offset == 0:
            return BlobReadStream(encoding=Compression.ZSTD, chunks=self._pass_through(ref, handle))
        chunks = self._decoded(ref, handle, offset=offset)
        if zstd:
            return BlobReadStream(
                encoding=Compression.ZSTD, chunks=_recompressed(chunks, ref, offset)
            )
        return BlobReadStream(encoding=Compression.NONE, chunks=chunks)

    def _corrupt(self, ref: BlobRef, exc: Exception) -> CorruptBlobError:
        self._store.delete(ref)
        return CorruptBlobError(f"stored blob {ref.digest} is corrupt and was deleted: {exc}")

    def _pass_through(self, ref: BlobRef, handle: BinaryIO) -> Generator[bytes, None, None]:
        size = self.limits.stream_chunk_size
        with handle:
            try:
                while chunk := handle.read(size):
                    yield chunk
            except BlobVerificationError as exc:
                raise self._corrupt(ref, exc) from None

    def _decoded(
        self, ref: BlobRef, handle: BinaryIO, *, offset: int
    ) -> Generator[bytes, None, None]:
        size = self.limits.stream_chunk_size
        skip = offset
        with handle:
            try:
                for chunk in decompress_chunks(handle, chunk_size=size):
                    if skip >= len(chunk):
                        skip -= len(chunk)
                        continue
                    yield chunk[skip:] if skip else chunk
                    skip = 0
                # The verifying store checks at the end of the stored data: read up to it.
                while handle.read(size):
                    pass
            except (BlobVerificationError, zstandard.ZstdError) as exc:
                raise self._corrupt(ref, exc) from None


def _recompressed(
    chunks: Generator[bytes, None, None], ref: BlobRef, offset: int
) -> Generator[bytes, None, None]:
    """Re-encode decompressed bytes from ``offset`` as one new zstd frame."""
    try:
        yield from compress_chunks(chunks, level=ZSTD_LEVEL, size=ref.size - offset)
    finally:
        chunks.close()
