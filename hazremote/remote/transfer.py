"""The blob transfer client: find-missing, batched and streamed upload and download, verified.

Knows the ``ContentStore`` and ``Capabilities`` services and nothing of circuit breakers or
warnings: every public coroutine returns its result or a :class:`TransferError` value. The
remote cache tier (:mod:`hazremote.remote.client`) wraps it with RC-003 semantics; a worker
uses it as it is.

Spec coverage:
* RC-004 — every downloaded byte is verified against its digest and size while it arrives.
* RC-006 — zstd on the wire (blobs stored as zstd frames are sent as they are); small blobs
  in batches bounded by the server's capabilities, large ones streamed in chunks; no blob is
  held whole in memory beyond the memory budget.
* RC-007 — :meth:`BlobTransfer.find_missing` first: :meth:`BlobTransfer.upload` sends only
  what the server lacks.
* SPEC §5 — the caller's metadata (the token) goes with every call.
Out of scope: manifests, breakers and the run's warning (:mod:`hazremote.remote.client`).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import grpc
import zstandard

from hazremote.cache.codec import (
    BlobCorrupt,
    FetchedBlob,
    VerifiedBlob,
    verified_blob,
    write_all,
)
from hazremote.cache.local import StoredBlob
from hazremote.cache.manifest import Compression
from hazremote.compression import WIRE_ZSTD_LEVEL
from hazremote.domain.digest import Digest, new_hasher
from hazremote.domain.model import HashName
from hazremote.remote._wire import (
    GRPC_OK,
    WIRE_IDENTITY,
    WIRE_ZSTD,
    digest_from_wire,
    digest_to_wire,
    hash_function,
)
from hazremote.remote.settings import RemoteTimeouts
from hazremote.wire.haz.remote.v1 import cache_pb2, cache_pb2_grpc

__all__ = [
    "DEFAULT_MEMORY_BUDGET",
    "MAX_MESSAGE",
    "BlobTransfer",
    "Limits",
    "TransferError",
    "TransferStats",
    "batches",
]

_T = TypeVar("_T")
#: Used until the server's capabilities are known (and when they cannot be fetched).
_DEFAULT_MAX_BATCH_ITEMS = 1000
_DEFAULT_MAX_BATCH_BYTES = 4 << 20
_DEFAULT_CHUNK = 1 << 20
#: gRPC's own limit on one message; batches stay well below it.
MAX_MESSAGE = 16 << 20
#: Downloaded batch blobs are kept in memory, verified, up to this many bytes (then written
#: to files): a remote hit restores and backfills them without touching a spool file.
DEFAULT_MEMORY_BUDGET = 64 << 20
#: Concurrent ReadBlob streams of one client.
_MAX_STREAMS = 4


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferError:
    """A transfer that failed. ``unhealthy``: a sign of an unhealthy remote (unreachable,
    deadline, refused call) rather than of bad data from a remote that answered."""

    message: str
    unhealthy: bool = True


class _Failure(Exception):
    """Raised inside this module; becomes a :class:`TransferError` at the public methods."""

    def __init__(self, message: str, *, breaker: bool = True) -> None:
        super().__init__(message)
        self.breaker = breaker


def _as_error(error: Exception) -> TransferError:
    if isinstance(error, grpc.aio.AioRpcError):
        detail = f"{error.code().name}: {error.details() or ''}".rstrip(": ")
        return TransferError(message=detail, unhealthy=True)
    if isinstance(error, _Failure):
        return TransferError(message=str(error), unhealthy=error.breaker)
    return TransferError(message=f"{type(error).__name__}: {error}", unhealthy=True)


async def _values(call: Coroutine[Any, Any, _T]) -> _T | TransferError:
    try:
        return await call
    except asyncio.CancelledError:
        raise
    except Exception as error:
        return _as_error(error)


@dataclass(slots=True)
class TransferStats:
    """What a transfer client moved (blobs counted once they verified or were accepted)."""

    blobs_downloaded: int = 0
    bytes_downloaded: int = 0
    blobs_uploaded: int = 0
    blobs_already_present: int = 0
    blob_upload_bytes: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """The server's limits (``GetCapabilities``), or defaults when it does not say."""

    max_batch_items: int = _DEFAULT_MAX_BATCH_ITEMS
    max_batch_bytes: int = _DEFAULT_MAX_BATCH_BYTES
    chunk: int = _DEFAULT_CHUNK
    zstd: bool = True
    max_blob: int | None = None


class BlobTransfer:
    """Blob transfer over one ``grpc.aio`` channel; use it on one event loop.

    Args:
        channel: Returns the channel to call on (opened lazily by the owner).
        hash_name: The workspace hash function (CACHE-002).
        namespace: Sent with ``GetCapabilities``.
        metadata: Sent with every call (``authorization: Bearer <token>``).
        timeouts: Deadlines of the calls (``connect_s``, ``lookup_s``, ``transfer_s``,
            ``per_mib_s``).
        files: Where blob files are verified, read and written (not the event loop).
        memory_budget: Bytes of downloaded batch blobs kept in memory, verified, over this
            client's life; the rest goes to files.
        stats: Counters to update (a fresh :class:`TransferStats` when omitted).
    """

    def __init__(
        self,
        channel: Callable[[], grpc.aio.Channel],
        *,
        hash_name: HashName,
        namespace: str,
        metadata: Sequence[tuple[str, str]],
        timeouts: RemoteTimeouts,
        files: Executor,
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
        stats: TransferStats | None = None,
    ) -> None:
        self._channel = channel
        self._hash_name = hash_name
        self._hash_fn = hash_function(hash_name)
        self._namespace = namespace
        self._metadata = tuple(metadata)
        self._timeouts = timeouts
        self._files = files
        self._memory_budget = memory_budget
        self.stats = TransferStats() if stats is None else stats
        self._caps_task: asyncio.Task[Limits] | None = None
        self._dctx = zstandard.ZstdDecompressor()  # the event loop's (not thread-safe)
        self._streams: asyncio.Semaphore | None = None

    def close(self) -> None:
        """Cancel a capabilities call still under way."""
        if self._caps_task is not None and not self._caps_task.done():
            self._caps_task.cancel()

    async def _on_files(self, fn: Callable[..., _T], *args: Any) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._files, partial(fn, *args))

    # -- capabilities -------------------------------------------------------------------------

    async def limits(self) -> Limits | TransferError:
        """The server's limits, asked once (again after a failure); defaults when the server
        does not implement ``GetCapabilities``."""
        return await _values(self._limits())

    async def _limits(self) -> Limits:
        if self._caps_task is None:
            self._caps_task = asyncio.ensure_future(self._fetch_limits())
        return await asyncio.shield(self._caps_task)

    async def _fetch_limits(self) -> Limits:
        stub = cache_pb2_grpc.CapabilitiesStub(self._channel())
        try:
            caps = await stub.GetCapabilities(
                cache_pb2.GetCapabilitiesRequest(namespace=self._namespace),
                timeout=self._timeouts.connect_s,
                metadata=self._metadata,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() is grpc.StatusCode.UNIMPLEMENTED:
                return Limits()
            self._caps_task = None  # ask again on the next call (after a re-probe)
            raise
        return Limits(
            max_batch_items=caps.max_batch_items or _DEFAULT_MAX_BATCH_ITEMS,
            max_batch_bytes=min(
                caps.max_batch_total_size_bytes or _DEFAULT_MAX_BATCH_BYTES,
                (caps.max_message_size_bytes or MAX_MESSAGE) // 2,
                MAX_MESSAGE // 2,
            ),
            chunk=min(caps.stream_chunk_size_bytes or _DEFAULT_CHUNK, 4 << 20),
            zstd=(not caps.compressions) or WIRE_ZSTD in caps.compressions,
            max_blob=caps.max_blob_size_bytes or None,
        )

    # -- downloads ----------------------------------------------------------------------------

    async def download(
        self, blobs: Mapping[Digest, int], dest: Path
    ) -> dict[Digest, FetchedBlob] | TransferError:
        """RC-004/006: ``blobs`` (digest → uncompressed size), every one verified: small ones
        as bytes in memory (within the memory budget), the others as files ``dest/<hex>`` of
        their uncompressed bytes (``dest`` created only when needed). Small blobs travel in
        batches, large ones stream, a few at a time.

        Returns:
            digest → blob, or the error (the files written so far stay in ``dest``).
        """
        return await _values(self._download(dict(blobs), dest))

    async def _download(self, blobs: dict[Digest, int], dest: Path) -> dict[Digest, FetchedBlob]:
        limits = await self._limits()
        small: list[tuple[Digest, int]] = []
        large: list[tuple[Digest, int]] = []
        for digest, size in blobs.items():
            (small if size <= limits.max_batch_bytes // 2 else large).append((digest, size))
        jobs = [self._read_batch(part, dest) for part in batches(small, limits)]
        jobs += [self._read_stream(digest, size, dest) for digest, size in large]
        fetched: dict[Digest, FetchedBlob] = {}
        for got in await asyncio.gather(*jobs):
            fetched.update(got)
        return fetched

    async def _read_batch(
        self, part: Sequence[tuple[Digest, int]], dest: Path
    ) -> dict[Digest, FetchedBlob]:
        stub = cache_pb2_grpc.ContentStoreStub(self._channel())
        sizes = dict(part)
        reply = await stub.BatchReadBlobs(
            cache_pb2.BatchReadBlobsRequest(
                hash_function=self._hash_fn,
                digests=[digest_to_wire(d, s) for d, s in part],
                accepted_compressions=[WIRE_ZSTD, WIRE_IDENTITY],
            ),
            timeout=self._timeouts.transfer_s,
            metadata=self._metadata,
        )
        items: list[tuple[Digest, Any, Any]] = []
        for item in reply.items:
            ident = digest_from_wire(item.digest)
            if ident is None or ident[0] not in sizes:
                raise _Failure("BatchReadBlobs answered a digest that was not asked for")
            digest = ident[0]
            if item.status_code != GRPC_OK:
                raise _Failure(
                    f"blob {digest.hex[:12]}: status {item.status_code} {item.status_message}",
                    breaker=False,
                )
            items.append((digest, item.data, item.compression))
        missing = set(sizes) - {digest for digest, _, _ in items}
        if missing:
            raise _Failure(f"{len(missing)} blob(s) missing from BatchReadBlobs")
        # Blobs that fit the memory budget are verified here, on the event loop: a thread
        # hop per batch, and that thread's fight for the GIL with the restores, cost more
        # than decompressing and hashing a few small blobs. The rest go to files in one hop.
        got: dict[Digest, FetchedBlob] = {}
        spill: list[tuple[Digest, Any, Any]] = []
        for digest, data, compression in items:
            size = sizes[digest]
            if size > self._memory_budget:
                spill.append((digest, data, compression))
                continue
            self._memory_budget -= size
            got[digest] = _decode_verified(
                bytes(data), compression, digest, size, hash_name=self._hash_name, dctx=self._dctx
            )
        if spill:
            got.update(await self._on_files(self._write_verified, spill, sizes, dest))
        self.stats.blobs_downloaded += len(got)
        self.stats.bytes_downloaded += sum(sizes[digest] for digest in got)
        return got

    def _write_verified(
        self, items: Sequence[tuple[Digest, Any, Any]], sizes: dict[Digest, int], dest: Path
    ) -> dict[Digest, FetchedBlob]:
        dest.mkdir(parents=True, exist_ok=True)
        got: dict[Digest, FetchedBlob] = {}
        dctx = zstandard.ZstdDecompressor()  # this thread's own
        for digest, data, compression in items:
            blob = _decode_verified(
                bytes(data),
                compression,
                digest,
                sizes[digest],
                hash_name=self._hash_name,
                dctx=dctx,
            )
            path = dest / digest.hex
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                write_all(fd, blob.data)
            finally:
                os.close(fd)
            got[digest] = path
        return got

    async def _read_stream(
        self, digest: Digest, size: int, dest: Path
    ) -> dict[Digest, FetchedBlob]:
        if self._streams is None:
            self._streams = asyncio.Semaphore(_MAX_STREAMS)
        async with self._streams:
            return await self._read_stream_now(digest, size, dest)

    async def _read_stream_now(
        self, digest: Digest, size: int, dest: Path
    ) -> dict[Digest, FetchedBlob]:
        stub = cache_pb2_grpc.ContentStoreStub(self._channel())
        timeout = self._timeouts.transfer_s + self._timeouts.per_mib_s * size / (1 << 20)
        call = stub.ReadBlob(
            cache_pb2.ReadBlobRequest(
                hash_function=self._hash_fn,
                digest=digest_to_wire(digest, size),
                accepted_compressions=[WIRE_ZSTD, WIRE_IDENTITY],
            ),
            timeout=timeout,
            metadata=self._metadata,
        )
        dest.mkdir(parents=True, exist_ok=True)
        path = dest / digest.hex
        sink = _VerifyingSink(path, digest=digest, size=size, hash_name=self._hash_name)
        try:
            first = True
            async for chunk in call:
                if first:
                    sink.start(chunk.compression)
                    first = False
                await self._on_files(sink.write, bytes(chunk.data))
            if first:
                sink.start(WIRE_IDENTITY)
            await self._on_files(sink.finish)
        finally:
            sink.close()
        self.stats.blobs_downloaded += 1
        self.stats.bytes_downloaded += size
        return {digest: path}

    # -- uploads ------------------------------------------------------------------------------

    async def find_missing(self, blobs: Mapping[Digest, int]) -> set[Digest] | TransferError:
        """RC-007: the digests of ``blobs`` (digest → uncompressed size) the server lacks."""

        async def call() -> set[Digest]:
            return set(await self._find_missing(blobs, await self._limits()))

        return await _values(call())

    async def upload(self, blobs: Sequence[StoredBlob]) -> TransferError | None:
        """RC-006/007: make the server hold ``blobs`` (files as they lie at rest): a blob over
        the server's size limit is refused first; then what the server lacks is sent, small
        blobs in batches, large ones streamed.

        Returns:
            ``None`` on success, else the error.
        """

        async def call() -> None:
            limits = await self._limits()
            too_big = [b for b in blobs if limits.max_blob is not None and b.size > limits.max_blob]
            if too_big:
                raise _Failure(
                    f"blob {too_big[0].digest.hex[:12]} ({too_big[0].size} bytes) exceeds the "
                    f"server's limit of {limits.max_blob} bytes",
                    breaker=False,
                )
            by_digest = {b.digest: b for b in blobs}
            sizes = {digest: blob.size for digest, blob in by_digest.items()}
            missing = [by_digest[d] for d in await self._find_missing(sizes, limits)]
            small = [b for b in missing if b.size <= limits.max_batch_bytes // 2]
            large = [b for b in missing if b.size > limits.max_batch_bytes // 2]
            for part in batches([(b, b.size) for b in small], limits):
                await self._write_batch([b for b, _ in part], limits)
            for blob in large:
                await self._write_stream(blob, limits)

        return await _values(call())

    async def _find_missing(self, sizes: Mapping[Digest, int], limits: Limits) -> list[Digest]:
        stub = cache_pb2_grpc.ContentStoreStub(self._channel())
        missing: list[Digest] = []
        items = list(sizes.items())
        for start in range(0, len(items), limits.max_batch_items):
            part = items[start : start + limits.max_batch_items]
            reply = await stub.FindMissingBlobs(
                cache_pb2.FindMissingBlobsRequest(
                    hash_function=self._hash_fn,
                    digests=[digest_to_wire(digest, size) for digest, size in part],
                ),
                timeout=self._timeouts.lookup_s,
                metadata=self._metadata,
            )
            for message in reply.missing:
                ident = digest_from_wire(message)
                if ident is not None and ident[0] in sizes:
                    missing.append(ident[0])
        self.stats.blobs_already_present += len(sizes) - len(missing)
        return missing

    async def _write_batch(self, part: Sequence[StoredBlob], limits: Limits) -> None:
        stub = cache_pb2_grpc.ContentStoreStub(self._channel())
        items = []
        for blob in part:
            data, compression = await self._on_files(_wire_bytes, blob, limits.zstd)
            items.append(
                cache_pb2.BatchUpdateBlobsRequest.Item(
                    digest=digest_to_wire(blob.digest, blob.size),
                    data=data,
                    compression=compression,
                )
            )
        reply = await stub.BatchUpdateBlobs(
            cache_pb2.BatchUpdateBlobsRequest(hash_function=self._hash_fn, items=items),
            timeout=self._timeouts.transfer_s,
            metadata=self._metadata,
        )
        for item in reply.items:
            if item.status_code != GRPC_OK:
                raise _Failure(f"BatchUpdateBlobs: status {item.status_code} {item.status_message}")
        self.stats.blobs_uploaded += len(part)
        self.stats.blob_upload_bytes += sum(b.size for b in part)

    async def _write_stream(self, blob: StoredBlob, limits: Limits) -> None:
        stub = cache_pb2_grpc.ContentStoreStub(self._channel())
        timeout = self._timeouts.transfer_s + self._timeouts.per_mib_s * blob.size / (1 << 20)
        reply = await stub.WriteBlob(
            _stream_chunks(blob, limits, self._hash_fn),
            timeout=timeout,
            metadata=self._metadata,
        )
        if reply.committed_size_bytes != blob.size:
            raise _Failure(
                f"WriteBlob of {blob.digest.hex[:12]} committed {reply.committed_size_bytes} "
                f"of {blob.size} bytes"
            )
        self.stats.blobs_uploaded += 1
        self.stats.blob_upload_bytes += blob.size


def batches(items: Iterable[tuple[_T, int]], limits: Limits) -> Iterable[list[tuple[_T, int]]]:
    """Groups bounded by the server's item count and total uncompressed size."""
    part: list[tuple[_T, int]] = []
    total = 0
    for item, size in items:
        if part and (len(part) >= limits.max_batch_items or total + size > limits.max_batch_bytes):
            yield part
            part, total = [], 0
        part.append((item, size))
        total += size
    if part:
        yield part


def _decode_verified(
    data: bytes,
    compression: Any,
    digest: Digest,
    size: int,
    *,
    hash_name: HashName,
    dctx: zstandard.ZstdDecompressor,
) -> VerifiedBlob:
    """RC-004: the uncompressed bytes of a batch item, verified against size and digest.

    A frame is decompressed only into the recorded size: one that declares another content
    size is refused unread, so a small hostile frame cannot make the client allocate more.
    ``dctx`` must not be used by another thread meanwhile.
    """
    if compression == WIRE_ZSTD:
        try:
            declared = zstandard.frame_content_size(data)
            if declared not in (size, -1):
                raise _Failure(
                    f"blob {digest.hex[:12]} declares {declared} bytes, not {size} (corrupt data)",
                    breaker=False,
                )
            raw = dctx.decompress(data, max_output_size=size)
        except zstandard.ZstdError as error:
            raise _Failure(
                f"blob {digest.hex[:12]} is not a valid zstd frame: {error}", breaker=False
            ) from None
    elif compression == WIRE_IDENTITY:
        raw = data
    else:
        raise _Failure(f"blob {digest.hex[:12]}: unknown compression {compression}")
    try:
        return verified_blob(raw, digest=digest, size=size, hash_name=hash_name)
    except BlobCorrupt as error:
        raise _Failure(str(error), breaker=False) from None


class _VerifyingSink:
    """Writes a streamed blob to a file, decompressing and hashing as it goes (RC-004)."""

    def __init__(self, path: Path, *, digest: Digest, size: int, hash_name: HashName) -> None:
        self._fh: BinaryIO = open(path, "wb")  # noqa: SIM115 - closed by close()
        self._digest = digest
        self._size = size
        self._hasher = new_hasher(hash_name)
        self._written = 0
        self._decompressor: Any = None

    def start(self, compression: Any) -> None:
        if compression == WIRE_ZSTD:
            self._decompressor = zstandard.ZstdDecompressor().decompressobj()
        elif compression != WIRE_IDENTITY:
            raise _Failure(f"ReadBlob: unknown compression {compression}")

    def write(self, data: bytes) -> None:
        if self._decompressor is not None:
            try:
                data = self._decompressor.decompress(data)
            except zstandard.ZstdError as error:
                raise _Failure(
                    f"blob {self._digest.hex[:12]} is not a valid zstd frame: {error}",
                    breaker=False,
                ) from None
        self._written += len(data)
        if self._written > self._size:
            raise _Failure(
                f"blob {self._digest.hex[:12]} is longer than recorded (corrupt data)",
                breaker=False,
            )
        self._hasher.update(data)
        self._fh.write(data)

    def finish(self) -> None:
        if self._written != self._size or self._hasher.digest() != self._digest.raw:
            raise _Failure(
                f"blob {self._digest.hex[:12]} does not match its digest (corrupt data)",
                breaker=False,
            )
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def _wire_bytes(blob: StoredBlob, zstd: bool) -> tuple[bytes, Any]:
    """A small blob's bytes as they go on the wire (zstd when the server takes it)."""
    data = blob.path.read_bytes()
    if blob.compression is Compression.ZSTD:
        if zstd:
            return data, WIRE_ZSTD
        return zstandard.ZstdDecompressor().decompress(data, max_output_size=blob.size), (
            WIRE_IDENTITY
        )
    if zstd:
        packed: bytes = zstandard.ZstdCompressor(
            level=WIRE_ZSTD_LEVEL, write_content_size=True
        ).compress(data)
        return packed, WIRE_ZSTD
    return data, WIRE_IDENTITY


async def _stream_chunks(blob: StoredBlob, limits: Limits, hash_fn: Any) -> AsyncIterator[Any]:
    """WriteBlob chunks of a large blob, read (and maybe compressed) a chunk at a time."""
    reader = _ChunkReader(blob, zstd=limits.zstd, chunk=limits.chunk)
    try:
        first = True
        while True:
            data, last = await asyncio.to_thread(reader.next)
            message = cache_pb2.WriteBlobChunk(data=data, finish=last)
            if first:
                message.hash_function = hash_fn
                message.digest.CopyFrom(digest_to_wire(blob.digest, blob.size))
                message.compression = WIRE_ZSTD if limits.zstd else WIRE_IDENTITY
                first = False
            yield message
            if last:
                return
    finally:
        reader.close()


class _ChunkReader:
    """Reads a stored blob as wire chunks: a zstd frame as is, raw bytes compressed on the fly."""

    def __init__(self, blob: StoredBlob, *, zstd: bool, chunk: int) -> None:
        self._fh: BinaryIO = open(blob.path, "rb")  # noqa: SIM115 - closed by close()
        self._chunk = chunk
        self._source: BinaryIO | Any = self._fh
        self._compressor: Any = None
        if blob.compression is Compression.ZSTD and not zstd:
            self._source = zstandard.ZstdDecompressor().stream_reader(self._fh, closefd=False)
        elif blob.compression is Compression.NONE and zstd:
            self._compressor = zstandard.ZstdCompressor(level=WIRE_ZSTD_LEVEL).compressobj(
                size=blob.size
            )
        self._buffer = bytearray()
        self._eof = False

    def next(self) -> tuple[bytes, bool]:
        """The next chunk (at most ``chunk`` bytes) and whether it is the last (maybe empty)."""
        if self._compressor is None:
            data: bytes = self._source.read(self._chunk)
            return data, not data
        # The compressor emits whole blocks (up to 128 KiB): re-cut them to the chunk size.
        while len(self._buffer) < self._chunk and not self._eof:
            raw: bytes = self._source.read(self._chunk)
            if raw:
                self._buffer += self._compressor.compress(raw)
            else:
                self._buffer += self._compressor.flush()
                self._eof = True
        out = bytes(self._buffer[: self._chunk])
        del self._buffer[: self._chunk]
        return out, self._eof and not self._buffer

    def close(self) -> None:
        self._fh.close()
