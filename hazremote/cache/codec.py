"""Blob encoding at rest: copy + hash + (maybe) zstd-compress in one pass, and the reverse.

Spec coverage:
* CACHE-010..013 — blobs MAY be zstd-compressed at rest; the choice is made per blob and
  recorded in the manifest. Tiny blobs stay uncompressed (a file under one 4 KiB block saves no
  disk and costs a decompressor call), and so do blobs whose first 64 KiB do not shrink by 10 %
  (already-compressed images, archives).
* CACHE-019..020 — decoding verifies size and digest of the decompressed bytes while they are
  produced; a zstd frame announces its content size, which lookups compare with the manifest.
* RC-006 — no blob is held whole in memory: files larger than one chunk are streamed.
* RC-004 — a :class:`VerifiedBlob` holds bytes that matched their digest and size when
  :func:`verified_blob` made it (a small remote download kept in memory): its holders restore
  and import it without hashing it again.
Out of scope: where blobs live and what is done with a bad one (``local``).
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import zstandard

from hazremote.cache.manifest import Compression
from hazremote.compression import MIN_COMPRESS_SIZE, PROBE_SIZE, compression_pays
from hazremote.domain.digest import Digest, Hasher, digest_bytes, new_hasher
from hazremote.domain.model import HashName
from hazremote.fileio import write_all

__all__ = [
    "CHUNK_SIZE",
    "BlobCodec",
    "BlobCorrupt",
    "EncodedBlob",
    "FetchedBlob",
    "VerifiedBlob",
    "verified_blob",
    "write_all",
    "zstd_content_size",
]

#: Read/write granularity; also the size up to which a blob is (de)compressed in one call.
CHUNK_SIZE = 1 << 20
#: The longest zstd frame header (magic + descriptor + window + dict id + content size).
_ZSTD_HEADER_MAX = 18


class BlobCorrupt(Exception):
    """A stored blob is missing, unreadable, or decodes to other bytes than recorded."""


@dataclass(frozen=True, slots=True)
class VerifiedBlob:
    """A blob's uncompressed bytes, checked against ``digest`` and their length when
    :func:`verified_blob` made it: make one only there."""

    digest: Digest
    data: bytes

    def holds(self, digest: Digest, size: int) -> bool:
        """Whether this is the blob of ``digest`` and ``size`` (no hashing needed)."""
        return self.digest == digest and len(self.data) == size


def verified_blob(data: bytes, *, digest: Digest, size: int, hash_name: HashName) -> VerifiedBlob:
    """RC-004: ``data`` as a :class:`VerifiedBlob` if it has ``size`` bytes hashing to ``digest``.

    Raises:
        BlobCorrupt: naming the blob.
    """
    if len(data) != size or digest_bytes(hash_name, data) != digest:
        raise BlobCorrupt(f"blob {digest.hex[:12]} does not match its digest (corrupt data)")
    return VerifiedBlob(digest, data)


#: A blob fetched from the remote tier: its verified bytes in memory, or a file of its
#: uncompressed bytes (verified by whoever reads it).
FetchedBlob = VerifiedBlob | Path


@dataclass(frozen=True, slots=True, kw_only=True)
class EncodedBlob:
    digest: Digest
    size: int  # uncompressed bytes
    compression: Compression
    mode: int  # permission bits of the source (rwx for user, group, other)


def zstd_content_size(path: str | os.PathLike[str]) -> int | None:
    """The content size announced by the zstd frame header of ``path``, or None if unreadable.

    Raises:
        OSError: ``path`` cannot be opened.
    """
    with open(path, "rb", buffering=0) as fh:
        header = fh.read(_ZSTD_HEADER_MAX)
    try:
        size: int = zstandard.frame_content_size(header)
    except zstandard.ZstdError:
        return None
    return size if size >= 0 else None


class BlobCodec:
    """Encodes files into blobs and decodes blobs back, hashing with the workspace function."""

    def __init__(self, *, hash_name: HashName, level: int) -> None:
        if not 1 <= level <= 22:
            raise ValueError(f"zstd level must be 1..22, got {level}")
        self._hash_name = hash_name
        self._level = level
        self._empty_digest = Digest(new_hasher(hash_name).digest())
        # zstandard's (de)compression contexts must never be used by two threads at once (the
        # cache is used from a thread pool: sharing one crashed the interpreter), so each
        # thread gets its own, created on first use.
        self._local = threading.local()

    @property
    def _cctx(self) -> zstandard.ZstdCompressor:
        cctx: zstandard.ZstdCompressor | None = getattr(self._local, "cctx", None)
        if cctx is None:
            # Our own digest verifies every read, so zstd's checksum would be a second,
            # redundant one. The content size goes into every frame header: lookups compare it.
            cctx = zstandard.ZstdCompressor(
                level=self._level, write_content_size=True, write_checksum=False
            )
            self._local.cctx = cctx
        return cctx

    @property
    def _dctx(self) -> zstandard.ZstdDecompressor:
        dctx: zstandard.ZstdDecompressor | None = getattr(self._local, "dctx", None)
        if dctx is None:
            dctx = zstandard.ZstdDecompressor()
            self._local.dctx = dctx
        return dctx

    @property
    def hash_name(self) -> HashName:
        return self._hash_name

    @property
    def level(self) -> int:
        return self._level

    # -- encoding ------------------------------------------------------------------------------

    def encode_file(self, source: Path, dest: Path, *, fsync: bool) -> EncodedBlob:
        """Copy ``source`` to the new file ``dest``, hashing and maybe compressing in one pass.

        Raises:
            OSError: reading ``source`` or writing ``dest`` failed (``dest`` may be partial).
            zstandard.ZstdError: ``source`` changed size while it was being compressed.
        """
        # O_NONBLOCK: a FIFO matched as an output must fail here, not hang the run.
        fd = os.open(source, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with open(fd, "rb") as src, open(dest, "xb") as out:
            info = os.fstat(src.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise OSError(errno.EINVAL, "not a regular file", str(source))
            hasher = new_hasher(self._hash_name)
            first = src.read(CHUNK_SIZE)
            hasher.update(first)
            if len(first) < CHUNK_SIZE:  # regular files return short reads only at EOF
                compression = self._write_small(first, out)
                size = len(first)
            else:
                expected = info.st_size
                compression = self._choose(first)
                size = self._write_large(
                    first, src, out, hasher=hasher, compression=compression, expected=expected
                )
            out.flush()
            if fsync:
                os.fsync(out.fileno())
        return EncodedBlob(
            digest=Digest(hasher.digest()),
            size=size,
            compression=compression,
            mode=stat.S_IMODE(info.st_mode) & 0o777,
        )

    def encode_bytes(self, data: bytes, dest: Path, *, fsync: bool) -> Compression:
        """Write ``data`` to the new file ``dest``, compressed when that pays (as a file of
        that content would be by :meth:`encode_file`); the caller knows its digest."""
        with open(dest, "xb") as out:
            if len(data) < CHUNK_SIZE:
                compression = self._write_small(data, out)
            else:
                compression = self._choose(data)
                if compression is Compression.ZSTD:
                    out.write(self._cctx.compress(data))
                else:
                    out.write(data)
            out.flush()
            if fsync:
                os.fsync(out.fileno())
        return compression

    def _write_small(self, data: bytes, out: BinaryIO) -> Compression:
        if len(data) >= MIN_COMPRESS_SIZE:
            packed: bytes = self._cctx.compress(data)
            if compression_pays(len(data), len(packed)):
                out.write(packed)
                return Compression.ZSTD
        out.write(data)
        return Compression.NONE

    def _choose(self, first: bytes) -> Compression:
        probe = first[:PROBE_SIZE]
        packed: bytes = self._cctx.compress(probe)
        if compression_pays(len(probe), len(packed)):
            return Compression.ZSTD
        return Compression.NONE

    def _write_large(
        self,
        first: bytes,
        src: BinaryIO,
        out: BinaryIO,
        *,
        hasher: Hasher,
        compression: Compression,
        expected: int,
    ) -> int:
        size = len(first)
        if compression is Compression.NONE:
            out.write(first)
            while chunk := src.read(CHUNK_SIZE):
                hasher.update(chunk)
                out.write(chunk)
                size += len(chunk)
            return size
        # The pledged size lands in the frame header; a file that changes size meanwhile makes
        # the compressor fail, and the store with it, which is right: its bytes are not a result.
        with self._cctx.stream_writer(out, size=expected, closefd=False) as writer:
            writer.write(first)
            while chunk := src.read(CHUNK_SIZE):
                hasher.update(chunk)
                writer.write(chunk)
                size += len(chunk)
        return size

    # -- decoding ------------------------------------------------------------------------------

    def decode(
        self,
        blob: str | os.PathLike[str],
        *,
        compression: Compression,
        size: int,
        digest: Digest,
        write: Callable[[bytes], object],
    ) -> None:
        """Feed the verified bytes of ``blob`` to ``write`` in chunks.

        ``write`` sees the bytes before the final digest check: callers that must not expose
        unverified bytes write to a staging file, or collect them first.

        Raises:
            BlobCorrupt: the blob is missing, unreadable, or its bytes differ from the record.
            OSError: raised by ``write`` (the destination), passed through unchanged.
        """
        label = os.path.basename(blob)
        if size == 0 and compression is Compression.NONE:
            # An empty blob has nothing to read (most stderr streams): only its record can
            # be wrong. Lookups already checked the file's size.
            if digest != self._empty_digest:
                raise BlobCorrupt(f"blob {label}: an empty blob does not hash to {digest.hex}")
            return
        try:
            fh = open(blob, "rb", buffering=0)  # noqa: SIM115 - closed below
        except OSError as exc:
            raise BlobCorrupt(f"blob {label} cannot be opened: {exc.strerror}") from None
        hasher = new_hasher(self._hash_name)
        produced = 0
        with fh:
            if compression is Compression.ZSTD and size <= CHUNK_SIZE:
                chunks: Iterator[bytes] = iter((self._decompress_small(fh, size, label),))
            elif compression is Compression.ZSTD:
                reader = self._dctx.stream_reader(fh, read_size=CHUNK_SIZE, closefd=False)
                chunks = iter(lambda: _read(reader, CHUNK_SIZE, label), b"")
            else:
                chunks = iter(lambda: _read(fh, CHUNK_SIZE, label), b"")
            for chunk in chunks:
                produced += len(chunk)
                if produced > size:
                    raise BlobCorrupt(f"blob {label} holds more than the recorded {size} bytes")
                hasher.update(chunk)
                write(chunk)
        if produced != size:
            raise BlobCorrupt(f"blob {label} holds {produced} bytes, recorded {size}")
        if hasher.digest() != digest.raw:
            raise BlobCorrupt(f"blob {label} does not hash to {digest.hex}")

    def _decompress_small(self, fh: BinaryIO, size: int, label: str) -> bytes:
        packed = _read(fh, CHUNK_SIZE + 1, label)
        try:
            # The frame header sizes the output buffer: never trust it beyond the record.
            announced = zstandard.frame_content_size(packed[:_ZSTD_HEADER_MAX])
            if announced != size:
                raise BlobCorrupt(f"blob {label}: zstd frame announces {announced} bytes")
            data: bytes = self._dctx.decompress(packed)
        except zstandard.ZstdError as exc:
            raise BlobCorrupt(f"blob {label} is not a valid zstd frame: {exc}") from None
        return data


def _read(reader: BinaryIO, size: int, label: str) -> bytes:
    """One read from a blob file (or its decompressor); failures mean a corrupt blob."""
    try:
        data = reader.read(size)
    except OSError as exc:
        raise BlobCorrupt(f"blob {label} cannot be read: {exc.strerror or exc}") from None
    except zstandard.ZstdError as exc:
        raise BlobCorrupt(f"blob {label} is not a valid zstd frame: {exc}") from None
    return data if data is not None else b""
