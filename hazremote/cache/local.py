"""The local cache: a directory of complete entries, crash-safe without a lock.

Layout (CACHE-010)::

    <root>/<first 2 hex of key>/<key>/manifest.json
                                     /stdout
                                     /stderr
                                     /outputs/<content digest>
    <root>/<aa>/.tmp-<key>-<random>/      a store in progress (or a crashed one)
    <root>/<aa>/.trash-<key>-<random>/    an entry being deleted

Spec coverage:
* CACHE-010..013 — the layout above; blobs compressed when worth it; ``root`` given by the caller.
* CACHE-014..016 — :meth:`LocalCache.lookup`: parse, schema, key and blob sizes, else a miss.
* CACHE-017 — :meth:`LocalCache.store`: staged, manifest last, one rename; failure is a warning.
* CACHE-019..020, CACHE-023, SEC-001 — :meth:`LocalCache.restore`; a faulty entry is removed.
* RC-001 — :meth:`LocalCache.import_entry` backfills a remote hit; :meth:`stored_blobs`.
* CACHE-021..022 — :meth:`info`, :meth:`clean` and :meth:`clear`.
Out of scope: deciding whether to store (CACHE-018, the executor), the remote tier, and the
per-task ``haz why`` index (:mod:`hazremote.cache.index`).
"""

from __future__ import annotations

import contextlib
import enum
import errno
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from hazremote.cache._restore import restore_into_workspace
from hazremote.cache.codec import (
    BlobCodec,
    BlobCorrupt,
    EncodedBlob,
    FetchedBlob,
    VerifiedBlob,
    write_all,
    zstd_content_size,
)
from hazremote.cache.collect import StoredBlob, collect_files, outputs_problem
from hazremote.cache.manifest import (
    Compression,
    Manifest,
    ManifestError,
    ManifestSchemaError,
    OutputRecord,
    RecordedKeyComponents,
    StreamRecord,
    parse_manifest,
)
from hazremote.cache.tier import (
    ByteSink,
    KnownDigests,
    LookupResult,
    LookupStatus,
    OutputFile,
    RestoreResult,
    StoreResult,
    StoreStatus,
)
from hazremote.compression import ZSTD_LEVEL
from hazremote.domain.digest import Digest, digest_bytes
from hazremote.domain.model import HashName
from hazremote.domain.patterns import PathPattern
from hazremote.fileio import fsync_dir
from hazremote.keys.components import KeyComponents

__all__ = [
    "CACHE_DIR_ENV",
    "DEFAULT_COMPRESSION_LEVEL",
    "DEFAULT_TEMP_GRACE_S",
    "MANIFEST_NAME",
    "CacheInfo",
    "CacheOptions",
    "CleanReason",
    "CleanReport",
    "FetchedBlob",
    "FsyncPolicy",
    "LocalCache",
    "RemovedItem",
    "StoredBlob",
    "VerifiedBlob",
    "resolve_cache_root",
]

#: CACHE-010..013: moves the cache, e.g. to share it between worktrees.
CACHE_DIR_ENV = "HAZ_CACHE_DIR"
MANIFEST_NAME = "manifest.json"
STDOUT_NAME = "stdout"
STDERR_NAME = "stderr"
OUTPUTS_DIR = "outputs"
#: ``bench/bench_zstd_level.py``: +5 % ratio over level 1 for ~12 % more compression CPU;
#: level 6 compresses 3x slower for +1.5 %. Decompression speed is the same for all three.
DEFAULT_COMPRESSION_LEVEL = ZSTD_LEVEL
#: Remote blobs up to this size are imported uncompressed, linked rather than re-encoded: at
#: this size compression saves little disk and re-encoding costs more than the download.
IMPORT_AS_IS_MAX = 64 * 1024
#: A staging directory younger than this may belong to a store in progress.
DEFAULT_TEMP_GRACE_S = 3600.0

_SHARD_RE = re.compile(r"[0-9a-f]{2}")
_KEY_RE = re.compile(r"[0-9a-f]{64}")
_TEMP_PREFIX = ".tmp-"
_TRASH_PREFIX = ".trash-"


def resolve_cache_root(workspace_root: Path, environ: Mapping[str, str]) -> Path:
    """CACHE-010..013: ``HAZ_CACHE_DIR`` if set and non-empty, else ``<root>/.haz/cache``.

    A relative ``HAZ_CACHE_DIR`` is taken relative to the workspace root (like Turborepo's
    ``--cache-dir``), so every directory of the workspace agrees on one cache.
    """
    configured = environ.get(CACHE_DIR_ENV, "")
    if not configured:
        return workspace_root / ".haz" / "cache"
    return workspace_root / Path(configured).expanduser()


class FsyncPolicy(enum.Enum):
    """How hard a store works to survive a power loss (CACHE-017).

    ``NONE``: no fsync. A crash can leave a published entry whose files lost their data; the
    lookup size checks and the digest verification of every restore turn it into a miss, and
    the entry is removed. ``FULL``: fsync every file, the staging directory before the rename
    and the shard directory after it: a published entry survives a power loss.

    ``NONE`` is the default: on this project's reference machine a store of 10 small outputs
    takes ~1.1 ms with it and ~4.8 ms with ``FULL`` (``bench/bench_restore.py``), and a torn
    entry costs only a re-run.
    """

    NONE = "none"
    FULL = "full"


class CleanReason(enum.Enum):
    CORRUPT = "corrupt"
    SCHEMA_MISMATCH = "schema-mismatch"
    ORPHAN_TEMP = "orphan-temp"
    MAX_AGE = "max-age"
    MAX_SIZE = "max-size"
    CLEARED = "cleared"


@dataclass(frozen=True, slots=True, kw_only=True)
class RemovedItem:
    """One directory removed (or, in a dry run, that would be): an entry or a leftover."""

    path: Path
    reason: CleanReason
    bytes: int


@dataclass(frozen=True, slots=True, kw_only=True)
class CleanReport:
    removed: tuple[RemovedItem, ...]
    dry_run: bool
    remaining_entries: int
    remaining_bytes: int

    @property
    def freed_bytes(self) -> int:
        return sum(item.bytes for item in self.removed)


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheInfo:
    """CACHE-022 ``haz cache info``; ``bytes`` counts file sizes of entries (not leftovers)."""

    root: Path
    entries: int
    bytes: int
    corrupt_entries: int
    schema_mismatched_entries: int
    orphan_temp_dirs: int
    orphan_bytes: int


#: Supplies a file holding the verified, uncompressed bytes of a blob (RC-001 import).
FetchBlob = Callable[[Digest, int], FetchedBlob]


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheOptions:
    """The arguments a :class:`LocalCache` was opened with (clock and grace aside)."""

    root: Path
    hash_name: HashName
    chapter_revision: int
    compression_level: int
    fsync: FsyncPolicy


@dataclass(frozen=True, slots=True, kw_only=True)
class _Scanned:
    path: Path
    key: str
    bytes: int
    last_used: float
    status: LookupStatus


class _EntryBlobs:
    """Reads the blobs of one entry (the ``BlobReader`` of ``_restore``)."""

    def __init__(self, entry: Path, codec: BlobCodec) -> None:
        self._entry = os.fspath(entry)
        self._codec = codec

    def decode_output(self, record: OutputRecord, write: Callable[[bytes], object]) -> None:
        self._codec.decode(
            os.path.join(self._entry, OUTPUTS_DIR, record.hash.hex),
            compression=record.compression,
            size=record.size,
            digest=record.hash,
            write=write,
        )

    def decode_stream(
        self, name: str, record: StreamRecord, write: Callable[[bytes], object]
    ) -> None:
        self._codec.decode(
            os.path.join(self._entry, name),
            compression=record.compression,
            size=record.size,
            digest=record.hash,
            write=write,
        )


class _FetchedBlobs:
    """Reads blobs fetched from the remote tier (a ``BlobReader``): verified bytes as they are,
    files of uncompressed bytes verified while read."""

    def __init__(self, fetched: Mapping[Digest, FetchedBlob], codec: BlobCodec) -> None:
        self._fetched = fetched
        self._codec = codec

    def decode_output(self, record: OutputRecord, write: Callable[[bytes], object]) -> None:
        self._decode(record.hash, record.size, write)

    def decode_stream(
        self, name: str, record: StreamRecord, write: Callable[[bytes], object]
    ) -> None:
        del name
        self._decode(record.hash, record.size, write)

    def _decode(self, digest: Digest, size: int, write: Callable[[bytes], object]) -> None:
        blob = self._fetched.get(digest)
        if blob is None:
            raise BlobCorrupt(f"blob {digest.hex} was not fetched")
        if isinstance(blob, VerifiedBlob):
            if not blob.holds(digest, size):
                raise BlobCorrupt(f"blob {digest.hex} was fetched as another blob")
            write(blob.data)  # hashed when it was downloaded
            return
        self._codec.decode(
            blob, compression=Compression.NONE, size=size, digest=digest, write=write
        )


class LocalCache:
    """The local cache tier (the first of :class:`~hazremote.cache.tiers.TieredCache`).

    Safe for concurrent use by several processes: publication is one directory rename, and
    readers verify what they read.
    """

    def __init__(
        self,
        root: Path,
        *,
        hash_name: HashName,
        chapter_revision: int,
        compression_level: int = DEFAULT_COMPRESSION_LEVEL,
        fsync: FsyncPolicy = FsyncPolicy.NONE,
        clock: Callable[[], float] = time.time,
        temp_grace_s: float = DEFAULT_TEMP_GRACE_S,
    ) -> None:
        """Create a cache over ``root`` (created on the first store).

        Args:
            root: The cache directory (``<workspace>/.haz/cache`` or ``HAZ_CACHE_DIR``).
            hash_name: The workspace hash function (CACHE-002).
            chapter_revision: The key chapter revision (CACHE-003); entries of another
                revision are ``miss-schema-mismatch``.
            compression_level: zstd level for blobs worth compressing.
            fsync: Durability of stores.
            clock: Seconds since the epoch; ``created_at_unix``, last-use times and ages.
            temp_grace_s: A staging directory older than this is an orphan.
        """
        self._root = root
        self._hash_name = hash_name
        self._revision = chapter_revision
        self._codec = BlobCodec(hash_name=hash_name, level=compression_level)
        self._fsync = fsync
        self._clock = clock
        self._temp_grace_s = temp_grace_s
        self._shards_seen: set[str] = set()  # shard directories known to exist

    @property
    def root(self) -> Path:
        return self._root

    @property
    def options(self) -> CacheOptions:
        """What another process needs to open this cache the same way (the backfill)."""
        return CacheOptions(
            root=self._root,
            hash_name=self._hash_name,
            chapter_revision=self._revision,
            compression_level=self._codec.level,
            fsync=self._fsync,
        )

    def entry_dir(self, key: Digest) -> Path:
        return self._root / key.hex[:2] / key.hex

    # -- lookup ------------------------------------------------------------------------------

    def lookup(self, key: Digest) -> LookupResult:
        """CACHE-014..016: a HIT with its manifest only if the entry is complete."""
        return self._lookup_dir(self.entry_dir(key), key.hex)

    def _lookup_dir(self, entry: Path, key_hex: str) -> LookupResult:
        try:
            data = (entry / MANIFEST_NAME).read_bytes()
        except FileNotFoundError:
            if entry.is_dir():
                return _corrupt("the entry has no manifest")
            return LookupResult(status=LookupStatus.MISS_NO_ENTRY)
        except OSError as exc:
            return _corrupt(f"the manifest cannot be read: {exc}")
        try:
            manifest = parse_manifest(
                data, chapter_revision=self._revision, hash_name=self._hash_name
            )
        except ManifestSchemaError as exc:
            return LookupResult(status=LookupStatus.MISS_SCHEMA_MISMATCH, detail=str(exc))
        except ManifestError as exc:
            return _corrupt(str(exc))
        if manifest.key.hex != key_hex:
            return _corrupt(f"the manifest is for key {manifest.key.hex}")
        problem = self._blob_problem(entry, manifest)
        if problem is not None:
            return _corrupt(problem)
        return LookupResult(status=LookupStatus.HIT, manifest=manifest)

    def _blob_problem(self, entry: Path, manifest: Manifest) -> str | None:
        base = os.fspath(entry)
        blobs_dir = os.path.join(base, OUTPUTS_DIR)
        blobs: list[tuple[str, str, int, Compression]] = [
            (
                STDOUT_NAME,
                os.path.join(base, STDOUT_NAME),
                manifest.stdout.size,
                manifest.stdout.compression,
            ),
            (
                STDERR_NAME,
                os.path.join(base, STDERR_NAME),
                manifest.stderr.size,
                manifest.stderr.compression,
            ),
        ]
        seen: dict[Digest, Compression] = {}
        for record in manifest.outputs:
            previous = seen.setdefault(record.hash, record.compression)
            if previous is not record.compression:
                return f"blob {record.hash.hex} is recorded with two compressions"
            path = os.path.join(blobs_dir, record.hash.hex)
            blobs.append((record.path, path, record.size, record.compression))
        for label, path, size, compression in blobs:
            try:
                if compression is Compression.NONE:
                    stored = os.stat(path).st_size
                else:
                    announced = zstd_content_size(path)
                    stored = -1 if announced is None else announced
            except OSError as exc:
                return f"the blob of {label} is unreadable: {exc.strerror or exc}"
            if stored != size:
                return f"the blob of {label} holds {stored} bytes, recorded {size}"
        return None

    # -- store -------------------------------------------------------------------------------

    def store(
        self,
        *,
        key: Digest,
        components: KeyComponents,
        stdout: Path,
        stderr: Path,
        outputs: Sequence[OutputFile],
        duration_ms: int,
        producer: str,
    ) -> StoreResult:
        """CACHE-017: store a successful run atomically. Never raises for I/O trouble.

        Args:
            key: The task's cache key.
            components: What the key was derived from (recorded without env values).
            stdout: Spool file holding the task's complete stdout.
            stderr: Spool file holding the task's complete stderr.
            outputs: The output files (workspace-absolute path → file on disk now).
            duration_ms: How long the run took.
            producer: Who stored it (e.g. ``user@host``).

        Returns:
            STORED, ALREADY_PRESENT (a valid entry existed: kept), or FAILED with a warning;
            after a failure no trace of the attempt remains.
        """
        problem = outputs_problem(outputs)
        if problem is not None:
            return _store_failed(key, problem)
        staging: Path | None = None
        try:
            staging = self._new_staging(key)
            manifest = self._stage(
                staging,
                key=key,
                components=components,
                stdout=stdout,
                stderr=stderr,
                outputs=outputs,
                duration_ms=duration_ms,
                producer=producer,
            )
            status = self._publish(key, staging)
            return StoreResult(status=status, manifest=manifest)
        except Exception as exc:  # CACHE-017: a failed store is only a warning, never an error
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
            return _store_failed(key, f"{type(exc).__name__}: {exc}")
        except BaseException:  # interrupted (Ctrl-C): leave no orphan behind, then go on dying
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
            raise

    def _stage(
        self,
        staging: Path,
        *,
        key: Digest,
        components: KeyComponents,
        stdout: Path,
        stderr: Path,
        outputs: Sequence[OutputFile],
        duration_ms: int,
        producer: str,
    ) -> Manifest:
        fsync = self._fsync is FsyncPolicy.FULL
        blobs_dir = staging / OUTPUTS_DIR
        blobs_dir.mkdir()
        streams = [
            self._codec.encode_file(spool, staging / name, fsync=fsync)
            for spool, name in ((stdout, STDOUT_NAME), (stderr, STDERR_NAME))
        ]
        collected = collect_files(outputs, blobs_dir=blobs_dir, codec=self._codec, fsync=fsync)
        manifest = Manifest(
            chapter_revision=self._revision,
            hash_function=self._hash_name,
            key=key,
            created_at_unix=int(self._clock()),
            exit_code=0,
            duration_ms=max(0, duration_ms),
            producer=producer,
            stdout=_stream_record(streams[0]),
            stderr=_stream_record(streams[1]),
            outputs=collected.outputs,
            key_components=RecordedKeyComponents.from_components(components),
        )
        # CACHE-011: the manifest is written last; its presence means the entry is complete.
        with open(staging / MANIFEST_NAME, "xb") as fh:
            fh.write(manifest.to_json())
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        if fsync:
            fsync_dir(blobs_dir)
            fsync_dir(staging)
        return manifest

    def _new_staging(self, key: Digest) -> Path:
        """A new staging directory in the shard of ``key`` (CACHE-017).

        Shard directories are created once and then remembered, saving a system call per
        store; one removed meanwhile (``haz cache clear`` elsewhere) is created again.
        """
        name = key.hex[:2]
        shard = self._root / name
        if name not in self._shards_seen:
            self._make_shard(shard)
            self._shards_seen.add(name)
        staging = shard / f"{_TEMP_PREFIX}{key.hex}-{secrets.token_hex(6)}"
        try:
            staging.mkdir()
        except FileNotFoundError:
            self._make_shard(shard)
            staging.mkdir()
        return staging

    def _make_shard(self, shard: Path) -> None:
        if not shard.is_dir():
            shard.mkdir(parents=True, exist_ok=True)
            if self._fsync is FsyncPolicy.FULL:
                fsync_dir(self._root)  # the new shard's own directory entry

    def _publish(self, key: Digest, staging: Path) -> StoreStatus:
        entry = self.entry_dir(key)
        for attempt in range(2):
            try:
                os.rename(staging, entry)
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
            else:
                if self._fsync is FsyncPolicy.FULL:
                    fsync_dir(entry.parent)
                return StoreStatus.STORED
            # Another run published this key first. A valid entry wins (concurrent stores of
            # one key hold equivalent results); an invalid one is replaced, once.
            if self._lookup_dir(entry, key.hex).hit or attempt == 1:
                break
            self._discard(entry)
        shutil.rmtree(staging, ignore_errors=True)
        if self._lookup_dir(entry, key.hex).hit:
            return StoreStatus.ALREADY_PRESENT
        raise OSError(errno.EEXIST, "an invalid entry kept reappearing", str(entry))

    # -- remote tier ---------------------------------------------------------------------------

    def stored_blobs(self, manifest: Manifest) -> tuple[StoredBlob, ...]:
        """The distinct blobs of the entry of ``manifest`` (streams first), for an upload."""
        entry = self.entry_dir(manifest.key)
        found: dict[Digest, StoredBlob] = {}
        for name, record in ((STDOUT_NAME, manifest.stdout), (STDERR_NAME, manifest.stderr)):
            found.setdefault(
                record.hash,
                StoredBlob(
                    digest=record.hash,
                    size=record.size,
                    path=entry / name,
                    compression=record.compression,
                ),
            )
        for output in manifest.outputs:
            found.setdefault(
                output.hash,
                StoredBlob(
                    digest=output.hash,
                    size=output.size,
                    path=entry / OUTPUTS_DIR / output.hash.hex,
                    compression=output.compression,
                ),
            )
        return tuple(found.values())

    def import_entry(self, manifest: Manifest, fetch_blob: FetchBlob) -> StoreResult:
        """RC-001: publish an entry for ``manifest`` whose blobs come from ``fetch_blob``.

        ``manifest`` must come from :func:`parse_manifest` (strict); its revision and hash
        function must be this cache's. A :class:`VerifiedBlob` is written as it is (up to
        :data:`IMPORT_AS_IS_MAX`) or encoded, without hashing it again; every fetched file
        must hash to its record: files up to :data:`IMPORT_AS_IS_MAX` are kept uncompressed
        (hard-linked to the fetched file when possible: its name may be unlinked afterwards,
        never its bytes rewritten), larger ones are re-encoded at rest with this cache's codec
        while being hashed. The manifest (with the local ``compression`` markers) is written
        last and the entry published with one rename, exactly as :meth:`store` does. Never
        raises for bad data or I/O trouble.

        Returns:
            STORED, ALREADY_PRESENT (a valid entry existed: kept), or FAILED with a warning.
        """
        key = manifest.key
        if (
            manifest.chapter_revision != self._revision
            or manifest.hash_function is not self._hash_name
        ):
            return _store_failed(key, "the manifest is of another revision or hash function")
        fsync = self._fsync is FsyncPolicy.FULL
        staging: Path | None = None
        try:
            staging = self._new_staging(key)
            (staging / OUTPUTS_DIR).mkdir()

            def put(digest: Digest, size: int, dest: Path) -> Compression:
                source = fetch_blob(digest, size)
                if isinstance(source, VerifiedBlob):
                    if not source.holds(digest, size):
                        raise ValueError(f"the fetched blob {digest.hex} is another blob")
                    return self._import_verified(source, dest, fsync=fsync)
                if size <= IMPORT_AS_IS_MAX:
                    return self._import_as_is(source, digest, size, dest, fsync=fsync)
                blob = self._codec.encode_file(source, dest, fsync=fsync)
                if blob.digest != digest or blob.size != size:
                    raise ValueError(f"the fetched blob {digest.hex} holds other bytes")
                return blob.compression

            streams = [
                replace(record, compression=put(record.hash, record.size, staging / name))
                for name, record in (
                    (STDOUT_NAME, manifest.stdout),
                    (STDERR_NAME, manifest.stderr),
                )
            ]
            encoded: dict[Digest, Compression] = {}
            outputs: list[OutputRecord] = []
            for record in manifest.outputs:
                if record.hash not in encoded:
                    dest = staging / OUTPUTS_DIR / record.hash.hex
                    encoded[record.hash] = put(record.hash, record.size, dest)
                outputs.append(replace(record, compression=encoded[record.hash]))
            local = replace(manifest, stdout=streams[0], stderr=streams[1], outputs=tuple(outputs))
            # CACHE-011: the manifest is written last; its presence means the entry is complete.
            with open(staging / MANIFEST_NAME, "xb") as fh:
                fh.write(local.to_json())
                fh.flush()
                if fsync:
                    os.fsync(fh.fileno())
            if fsync:
                fsync_dir(staging / OUTPUTS_DIR)
                fsync_dir(staging)
            status = self._publish(key, staging)
            return StoreResult(status=status, manifest=local)
        except Exception as exc:  # a failed import is a miss with a warning, never an error
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
            return StoreResult(
                status=StoreStatus.FAILED,
                warning=f"could not import remote cache entry {key.hex[:12]}: "
                f"{type(exc).__name__}: {exc}",
            )
        except BaseException:  # interrupted: leave no orphan behind, then go on dying
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
            raise

    def _import_verified(self, blob: VerifiedBlob, dest: Path, *, fsync: bool) -> Compression:
        """A blob already verified in memory is written as it is (small) or encoded (large)."""
        if len(blob.data) > IMPORT_AS_IS_MAX:
            return self._codec.encode_bytes(blob.data, dest, fsync=fsync)
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        try:
            write_all(fd, blob.data)
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        return Compression.NONE

    def _import_as_is(
        self, source: Path, digest: Digest, size: int, dest: Path, *, fsync: bool
    ) -> Compression:
        """A small fetched blob, verified, becomes the entry's blob uncompressed: hard-linked
        when the download is on this file system (no bytes written), else copied."""
        data = _read_small(source, size + 1)
        if len(data) != size or digest_bytes(self._hash_name, data) != digest:
            raise ValueError(f"the fetched blob {digest.hex} holds other bytes")
        try:
            os.link(source, dest)
        except OSError:
            with open(dest, "xb") as out:
                out.write(data)
                out.flush()
                if fsync:
                    os.fsync(out.fileno())
        else:
            if fsync:  # the download itself was not synced
                fd = os.open(dest, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        return Compression.NONE

    # -- restore -----------------------------------------------------------------------------

    def restore(
        self,
        manifest: Manifest,
        *,
        workspace_root: Path,
        output_patterns: Sequence[PathPattern],
        stdout_sink: ByteSink,
        stderr_sink: ByteSink,
        known_digests: KnownDigests | None = None,
        fetched: Mapping[Digest, FetchedBlob] | None = None,
    ) -> RestoreResult:
        """CACHE-019..020, SEC-001: restore a manifest returned by :meth:`lookup`.

        Any status but RESTORED means the task must run; an entry whose data was at fault
        (wrong bytes, missing blob, undeclared or reserved path) is removed first.

        With ``fetched`` (digest → verified bytes or a file of the uncompressed bytes, as for
        :meth:`import_entry`), a remote manifest is restored straight from its download
        (RC-001), so the backfill of the local cache can follow off the critical path: the
        same rules apply, every file's bytes are verified again, and there is no entry to touch.
        """
        entry = self.entry_dir(manifest.key)
        outcome = restore_into_workspace(
            manifest,
            workspace_root=workspace_root,
            output_patterns=output_patterns,
            stdout_sink=stdout_sink,
            stderr_sink=stderr_sink,
            known_digests=known_digests,
            blobs=_EntryBlobs(entry, self._codec)
            if fetched is None
            else _FetchedBlobs(fetched, self._codec),
        )
        if fetched is not None:
            return outcome.result
        if outcome.entry_at_fault:
            return replace(outcome.result, entry_removed=self._discard(entry))
        if outcome.result.ok:
            # The manifest's mtime is the entry's last use: `clean` evicts by it.
            now = self._clock()
            with contextlib.suppress(OSError):
                os.utime(entry / MANIFEST_NAME, (now, now))
        return outcome.result

    def remove(self, key: Digest) -> bool:
        """Remove the entry of ``key`` if present; True when this call removed it."""
        return self._discard(self.entry_dir(key))

    def _discard(self, entry: Path) -> bool:
        # Renaming first makes the entry vanish at once for concurrent readers.
        trash = entry.parent / f"{_TRASH_PREFIX}{entry.name}-{secrets.token_hex(6)}"
        try:
            os.rename(entry, trash)
        except OSError:
            return False
        shutil.rmtree(trash, ignore_errors=True)
        return True

    # -- housekeeping ------------------------------------------------------------------------

    def info(self) -> CacheInfo:
        """CACHE-022 ``haz cache info``: every entry is checked as a lookup would."""
        entries = list(self._scan_entries())
        orphans = [item for item in self._scan_leftovers() if item[1]]
        valid = [e for e in entries if e.status is LookupStatus.HIT]
        return CacheInfo(
            root=self._root,
            entries=len(valid),
            bytes=sum(e.bytes for e in valid),
            corrupt_entries=sum(e.status is LookupStatus.MISS_CORRUPT for e in entries),
            schema_mismatched_entries=sum(
                e.status is LookupStatus.MISS_SCHEMA_MISMATCH for e in entries
            ),
            orphan_temp_dirs=len(orphans),
            orphan_bytes=sum(_tree_bytes(path) for path, _ in orphans),
        )

    def clean(
        self,
        *,
        soft: bool = False,
        max_age_s: float | None = None,
        max_size: int | None = None,
        dry_run: bool = False,
    ) -> CleanReport:
        """CACHE-022 ``haz cache clean``.

        Args:
            soft: Remove corrupt and schema-mismatched entries, and leftover staging and trash
                directories (staging ones only when older than the grace period).
            max_age_s: Remove entries not used (stored or restored) for this long.
            max_size: Then remove the least recently used entries until the entries' total
                size is at most this many bytes.
            dry_run: Report what would be removed; remove nothing.
        """
        removed: list[RemovedItem] = []
        kept: list[_Scanned] = []
        now = self._clock()
        for entry in self._scan_entries():
            reason: CleanReason | None = None
            if soft and entry.status is LookupStatus.MISS_CORRUPT:
                reason = CleanReason.CORRUPT
            elif soft and entry.status is LookupStatus.MISS_SCHEMA_MISMATCH:
                reason = CleanReason.SCHEMA_MISMATCH
            elif max_age_s is not None and entry.last_used < now - max_age_s:
                reason = CleanReason.MAX_AGE
            if reason is None:
                kept.append(entry)
            else:
                removed.append(RemovedItem(path=entry.path, reason=reason, bytes=entry.bytes))
        if soft:
            for path, orphan in self._scan_leftovers():
                if orphan:
                    removed.append(
                        RemovedItem(
                            path=path, reason=CleanReason.ORPHAN_TEMP, bytes=_tree_bytes(path)
                        )
                    )
        if max_size is not None:
            kept.sort(key=lambda e: (e.last_used, e.key))
            total = sum(e.bytes for e in kept)
            while kept and total > max_size:
                victim = kept.pop(0)
                total -= victim.bytes
                removed.append(
                    RemovedItem(path=victim.path, reason=CleanReason.MAX_SIZE, bytes=victim.bytes)
                )
        if not dry_run:
            for item in removed:
                if item.reason is CleanReason.ORPHAN_TEMP:
                    shutil.rmtree(item.path, ignore_errors=True)
                else:
                    self._discard(item.path)
        return CleanReport(
            removed=tuple(removed),
            dry_run=dry_run,
            remaining_entries=len(kept),
            remaining_bytes=sum(e.bytes for e in kept),
        )

    def clear(self) -> CleanReport:
        """CACHE-021 ``haz cache clear``: remove every entry and leftover (the root stays)."""
        removed: list[RemovedItem] = []
        for shard in self._shards():
            size = _tree_bytes(shard)
            trash = self._root / f"{_TRASH_PREFIX}{shard.name}-{secrets.token_hex(6)}"
            try:
                os.rename(shard, trash)
            except OSError:
                continue
            shutil.rmtree(trash, ignore_errors=True)
            removed.append(RemovedItem(path=shard, reason=CleanReason.CLEARED, bytes=size))
        for leftover in self._root_trash():
            removed.append(
                RemovedItem(path=leftover, reason=CleanReason.CLEARED, bytes=_tree_bytes(leftover))
            )
            shutil.rmtree(leftover, ignore_errors=True)
        return CleanReport(
            removed=tuple(removed), dry_run=False, remaining_entries=0, remaining_bytes=0
        )

    def _shards(self) -> list[Path]:
        try:
            children = list(os.scandir(self._root))
        except OSError:
            return []
        return sorted(
            Path(c.path)
            for c in children
            if _SHARD_RE.fullmatch(c.name) and c.is_dir(follow_symlinks=False)
        )

    def _root_trash(self) -> list[Path]:
        try:
            children = list(os.scandir(self._root))
        except OSError:
            return []
        return sorted(
            Path(c.path)
            for c in children
            if c.name.startswith(_TRASH_PREFIX) and c.is_dir(follow_symlinks=False)
        )

    def _scan_entries(self) -> Iterator[_Scanned]:
        for shard in self._shards():
            for child in sorted(os.scandir(shard), key=lambda c: c.name):
                name = child.name
                if not (_KEY_RE.fullmatch(name) and name.startswith(shard.name)):
                    continue
                if not child.is_dir(follow_symlinks=False):
                    continue
                path = Path(child.path)
                yield _Scanned(
                    path=path,
                    key=name,
                    bytes=_tree_bytes(path),
                    last_used=_last_used(path),
                    status=self._lookup_dir(path, name).status,
                )

    def _scan_leftovers(self) -> Iterator[tuple[Path, bool]]:
        """Staging and trash directories, each with whether it is an orphan now."""
        deadline = self._clock() - self._temp_grace_s
        for shard in self._shards():
            for child in sorted(os.scandir(shard), key=lambda c: c.name):
                if not child.is_dir(follow_symlinks=False):
                    continue
                if child.name.startswith(_TRASH_PREFIX):
                    yield Path(child.path), True
                elif child.name.startswith(_TEMP_PREFIX):
                    yield Path(child.path), _last_used(Path(child.path)) < deadline
        for leftover in self._root_trash():
            yield leftover, True


def _corrupt(detail: str) -> LookupResult:
    return LookupResult(status=LookupStatus.MISS_CORRUPT, detail=detail)


def _store_failed(key: Digest, problem: str) -> StoreResult:
    return StoreResult(
        status=StoreStatus.FAILED,
        warning=f"could not store the result in the local cache (key {key.hex[:12]}): {problem}",
    )


def _stream_record(blob: EncodedBlob) -> StreamRecord:
    return StreamRecord(hash=blob.digest, size=blob.size, compression=blob.compression)


def _read_small(path: Path, limit: int) -> bytes:
    """Up to ``limit`` bytes of a small file, in as few system calls as it takes."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        parts: list[bytes] = []
        while limit > 0 and (chunk := os.read(fd, limit)):
            parts.append(chunk)
            limit -= len(chunk)
        return b"".join(parts)
    finally:
        os.close(fd)


def _last_used(path: Path) -> float:
    """The manifest's mtime (bumped by every restore), else the directory's."""
    for candidate in (path / MANIFEST_NAME, path):
        try:
            return candidate.stat().st_mtime
        except OSError:
            continue
    return 0.0


def _tree_bytes(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total
