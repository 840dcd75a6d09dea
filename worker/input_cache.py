"""The worker's input cache: a local content-addressed store of input blobs, bounded, LRU.

Blobs lie uncompressed under ``<root>/blobs/<hex>`` (read-only files, so a sandbox copies
them with reflink / ``copy_file_range``); every blob is verified against its digest and size
before it gets its name, and is published whole (temp file in ``<root>/tmp``, then
:func:`hazremote.fileio.publish`). Recency is kept in memory and persisted as the file's
mtime, touched on every use, so a restarted worker evicts in the same order.

Spec coverage:
* RX-009 — a content-addressed cache of input blobs, bounded by size, least recently used first.
* RC-004 — a blob enters only once its bytes hash to its digest and have its size.
* CACHE-017 — a blob appears whole or not at all; a crash leaves only temp files, removed at start.
Out of scope: downloading (a :data:`FetchBlobs` hook, e.g. ``BlobTransfer.download``) and
materialising into a sandbox (:mod:`hazremote.execute.sandbox`). One worker process owns a
root; its threads share one :class:`InputCache`.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import threading
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from pathlib import Path

from hazremote.cache.codec import CHUNK_SIZE, BlobCorrupt, FetchedBlob, VerifiedBlob
from hazremote.domain.digest import Digest, new_hasher
from hazremote.domain.model import HashName
from hazremote.execute.sandbox import SandboxInput
from hazremote.fileio import publish, write_all
from hazremote.remote.transfer import TransferError

__all__ = ["FetchBlobs", "InputCache"]

#: Downloads blobs (digest → size) into a directory, as ``BlobTransfer.download`` does.
FetchBlobs = Callable[
    [Mapping[Digest, int], Path], Awaitable[Mapping[Digest, FetchedBlob] | TransferError]
]

_HEX_NAME = re.compile(r"[0-9a-f]{64}")
#: Cached blobs are read-only: a sandbox gets a copy, never the file itself.
_BLOB_MODE = 0o444


class InputCache:
    """RX-009: input blobs by digest under ``root``, at most ``max_bytes`` of them (unless the
    blobs held by running actions alone exceed it), evicting the least recently used.

    Args:
        root: The cache's directory (created); owned by this process.
        max_bytes: The size bound.
        hash_name: The hash function of the digests.
        fetch: Downloads missing blobs for :meth:`ensure`; ``None`` when nothing is fetched.
    """

    def __init__(
        self,
        root: Path,
        *,
        max_bytes: int,
        hash_name: HashName,
        fetch: FetchBlobs | None = None,
    ) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self._blobs = root / "blobs"
        self._tmp = root / "tmp"
        self._max_bytes = max_bytes
        self._hash_name = hash_name
        self._fetch = fetch
        self._lock = threading.Lock()
        self._lru: OrderedDict[Digest, int] = OrderedDict()  # digest → size, oldest first
        self._total = 0
        self._pins: Counter[Digest] = Counter()
        self._blobs.mkdir(parents=True, exist_ok=True)
        # Temp files are the only trace a crash leaves: nothing else writes under this root.
        shutil.rmtree(self._tmp, ignore_errors=True)
        self._tmp.mkdir(parents=True, exist_ok=True)
        self._load()

    def _load(self) -> None:
        found: list[tuple[float, Digest, int]] = []
        for entry in os.scandir(self._blobs):
            info = entry.stat(follow_symlinks=False)
            if not _HEX_NAME.fullmatch(entry.name) or not entry.is_file(follow_symlinks=False):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                continue
            found.append((info.st_mtime, Digest.from_hex(entry.name), info.st_size))
        for _, digest, size in sorted(found, key=lambda item: item[0]):
            self._lru[digest] = size
            self._total += size
        with self._lock:
            self._evict()

    # -- reading -------------------------------------------------------------------------------

    @property
    def total_bytes(self) -> int:
        """Bytes held now."""
        with self._lock:
            return self._total

    def path_of(self, digest: Digest) -> Path:
        """Where the blob of ``digest`` lies when present."""
        return self._blobs / digest.hex

    def get(self, digest: Digest, size: int) -> Path | None:
        """The file holding the blob (its use recorded), or None when it is not here.

        The file may be evicted by a later :meth:`add` unless the caller :meth:`hold`\\ s it.
        """
        with self._lock:
            known = self._lru.get(digest)
            if known is None or known != size:
                return None
            path = self.path_of(digest)
            try:
                os.utime(path)  # the persisted recency, for the next start
            except FileNotFoundError:
                self._drop(digest)  # removed behind our back: a miss, not an error
                return None
            self._lru.move_to_end(digest)
            return path

    def locate(self, file: SandboxInput) -> Path | None:
        """The sandbox's ``InputSource`` port: the blob of ``file``, if present."""
        return self.get(file.digest, file.size)

    def missing(self, refs: Mapping[Digest, int]) -> dict[Digest, int]:
        """The blobs of ``refs`` (digest → size) not held now."""
        with self._lock:
            return {d: s for d, s in refs.items() if self._lru.get(d) != s}

    @contextlib.contextmanager
    def hold(self, digests: Iterable[Digest]) -> Iterator[None]:
        """Keep ``digests`` from eviction while the block runs (an action materialising)."""
        held = list(digests)
        with self._lock:
            self._pins.update(held)
        try:
            yield
        finally:
            with self._lock:
                self._pins.subtract(held)
                self._pins += Counter()  # drop zero counts
                self._evict()

    # -- adding --------------------------------------------------------------------------------

    def add_blob(self, blob: VerifiedBlob) -> Path:
        """Store verified bytes (:func:`hazremote.cache.codec.verified_blob` checked them).

        Raises:
            OSError: the blob could not be written.
        """
        fd, temp = tempfile.mkstemp(dir=self._tmp, prefix="in-")
        try:
            write_all(fd, blob.data)
            os.fchmod(fd, _BLOB_MODE)
        except BaseException:
            os.close(fd)
            os.unlink(temp)
            raise
        os.close(fd)
        return self._publish(Path(temp), blob.digest, len(blob.data))

    def add_file(self, source: Path, *, digest: Digest, size: int, move: bool = False) -> Path:
        """Store the uncompressed bytes in ``source`` after checking them against ``digest``
        and ``size``. With ``move`` the file itself is taken (it must be on this cache's
        file system; it is gone afterwards, verified or not).

        Raises:
            BlobCorrupt: the bytes are not the blob's.
            OSError: reading or writing failed.
        """
        if move:
            temp = self._tmp / f"in-move-{os.getpid()}-{threading.get_ident()}-{digest.hex}"
            os.replace(source, temp)
            try:
                self._check(temp, digest, size)
                os.chmod(temp, _BLOB_MODE)
            except BaseException:
                temp.unlink(missing_ok=True)
                raise
            return self._publish(temp, digest, size)
        fd, name = tempfile.mkstemp(dir=self._tmp, prefix="in-")
        temp = Path(name)
        try:
            hasher = new_hasher(self._hash_name)
            produced = 0
            with open(source, "rb", buffering=0) as src:
                while chunk := src.read(CHUNK_SIZE):
                    produced += len(chunk)
                    if produced > size:
                        break
                    hasher.update(chunk)
                    write_all(fd, chunk)
            if produced != size or hasher.digest() != digest.raw:
                raise BlobCorrupt(
                    f"blob {digest.hex[:12]} does not match its digest (corrupt data)"
                )
            os.fchmod(fd, _BLOB_MODE)
        except BaseException:
            os.close(fd)
            temp.unlink(missing_ok=True)
            raise
        os.close(fd)
        return self._publish(temp, digest, size)

    async def ensure(self, refs: Mapping[Digest, int]) -> TransferError | None:
        """Make every blob of ``refs`` present: the missing ones are fetched in one call of the
        hook (which batches them) and verified as they enter.

        Returns:
            None when all are present, else why not (a blob fetched with other bytes than its
            digest says is a failure too, and is not kept).
        """
        wanted = self.missing(refs)
        if not wanted:
            return None
        if self._fetch is None:
            return TransferError(message=f"{len(wanted)} input blob(s) missing", unhealthy=False)
        dest = Path(tempfile.mkdtemp(dir=self._tmp, prefix="fetch-"))
        try:
            got = await self._fetch(wanted, dest)
            if isinstance(got, TransferError):
                return got
            absent = set(wanted) - set(got)
            if absent:
                first = min(absent, key=lambda d: d.hex)
                return TransferError(
                    message=f"{len(absent)} input blob(s) not fetched, e.g. {first.hex[:12]}",
                    unhealthy=False,
                )
            for digest, blob in got.items():
                size = wanted.get(digest)
                if size is None:
                    continue  # not asked for: never trusted
                try:
                    if isinstance(blob, VerifiedBlob):
                        if not blob.holds(digest, size):
                            raise BlobCorrupt(f"blob {digest.hex[:12]} is not the one asked for")
                        self.add_blob(blob)
                    else:
                        self.add_file(blob, digest=digest, size=size, move=_under(blob, dest))
                except BlobCorrupt as exc:
                    return TransferError(message=str(exc), unhealthy=False)
            return None
        finally:
            shutil.rmtree(dest, ignore_errors=True)

    # -- internals -----------------------------------------------------------------------------

    def _check(self, path: Path, digest: Digest, size: int) -> None:
        hasher = new_hasher(self._hash_name)
        produced = 0
        with open(path, "rb", buffering=0) as src:
            while chunk := src.read(CHUNK_SIZE):
                produced += len(chunk)
                hasher.update(chunk)
        if produced != size or hasher.digest() != digest.raw:
            raise BlobCorrupt(f"blob {digest.hex[:12]} does not match its digest (corrupt data)")

    def _publish(self, temp: Path, digest: Digest, size: int) -> Path:
        path = self.path_of(digest)
        # Without replace: a racing thread that stored the same blob first wins, and its
        # bytes are the same ones (both were verified).
        publish(temp, path, replace=False, fsync=False)
        with self._lock:
            if digest not in self._lru:
                self._lru[digest] = size
                self._total += size
            self._lru.move_to_end(digest)
            self._evict()
        return path

    def _evict(self) -> None:
        """Remove least recently used, unheld blobs until within the bound (lock held)."""
        if self._total <= self._max_bytes:
            return
        for digest in list(self._lru):
            if self._total <= self._max_bytes:
                break
            if self._pins.get(digest):
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path_of(digest))
            self._drop(digest)

    def _drop(self, digest: Digest) -> None:
        size = self._lru.pop(digest, None)
        if size is not None:
            self._total -= size


def _under(path: Path, directory: Path) -> bool:
    return path.parent == directory
