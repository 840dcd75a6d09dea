"""The stat cache: ``path → (mode, inode, size, mtime, ctime) → content digest``, like git's index.

A file whose ``stat`` fields are unchanged since it was last hashed is not read again. The
cache is persisted per workspace and hash function at
``<workspace>/.haz/state/statcache-<hash>.bin``; a missing, corrupt or foreign file is ignored.

Racy timestamps (git's "racy clean" problem) are handled by two rules:

* Insert rule: :meth:`StatCache.record` keeps an entry only when its ``mtime`` and ``ctime``
  are older than ``observed_ns - racy_margin_ns`` (``observed_ns`` read before the stat).
* Snapshot rule: an entry loaded from disk is trusted only when its ``mtime`` and ``ctime``
  are strictly older than the cache file's own ``mtime``.

An untrusted entry is re-hashed. Entries unused for ``max_unused_days`` are dropped on save.

Spec coverage:
* CACHE-006 — content digests of input files, reused while a file is provably unchanged.
* CACHE-019..020 — the restore side asks :meth:`StatCache.lookup` too.
Out of scope: hashing bytes (``hazremote.keys.hashing``), deciding which files are inputs.
"""

from __future__ import annotations

import marshal
import struct
from collections.abc import Callable
from typing import Protocol

import blake3

from hazremote.domain.digest import Digest
from hazremote.domain.model import HashName
from hazremote.keys.fs import FileStat

__all__ = [
    "DEFAULT_MAX_UNUSED_DAYS",
    "DEFAULT_RACY_MARGIN_NS",
    "FORMAT_VERSION",
    "MAGIC",
    "StatCache",
    "StateFiles",
    "statcache_path",
]

MAGIC = b"HAZSTAT\x00"
FORMAT_VERSION = 1
DEFAULT_RACY_MARGIN_NS = 2_000_000_000
DEFAULT_MAX_UNUSED_DAYS = 30
_DAY_NS = 86_400 * 1_000_000_000
_HEADER = struct.Struct("<8sII32s")
# mode, inode, size, mtime_ns, ctime_ns, last-used day, digest
_RECORD = struct.Struct("<IQqqqI32s")
_DAY_OFFSET = 36


class StateFiles(Protocol):
    """The part of the ``Filesystem`` port the stat cache persists through."""

    def stat(self, path: str) -> FileStat: ...

    def read_bytes(self, path: str) -> bytes: ...

    def write_atomic(self, path: str, data: bytes) -> None: ...


def statcache_path(workspace_root: str, hash_name: HashName) -> str:
    """Host path of the workspace's stat cache for ``hash_name``."""
    return f"{workspace_root.rstrip('/')}/.haz/state/statcache-{hash_name.value}.bin"


class StatCache:
    """Digests of files keyed by workspace path and validated by ``stat`` fields.

    Not thread-safe: the key deriver calls it from one thread and hashes in a pool.

    Args:
        hash_name: The workspace hash function; a cache of the other function is foreign.
        clock: Wall clock in nanoseconds since the epoch (injected: tests drive it).
        racy_margin_ns: See the insert rule in the module docstring.
        max_unused_days: Entries unused for longer are dropped on save.
    """

    def __init__(
        self,
        *,
        hash_name: HashName,
        clock: Callable[[], int],
        racy_margin_ns: int = DEFAULT_RACY_MARGIN_NS,
        max_unused_days: int = DEFAULT_MAX_UNUSED_DAYS,
    ) -> None:
        self.hash_name = hash_name
        self._clock = clock
        self._racy_margin_ns = racy_margin_ns
        self._max_unused_days = max_unused_days
        self._entries: dict[str, bytes] = {}
        # mtime of the cache file when loaded: the snapshot rule's bound for loaded entries
        self._snapshot_ns = 0
        self._fresh: set[str] = set()  # recorded this session, already checked by the insert rule
        self._today = clock() // _DAY_NS
        self._stale_day: set[str] = set()  # used this session, last-used day to be moved
        self._dirty = False
        #: Why the persisted file was ignored on load, or None.
        self.load_problem: str | None = None

    def __len__(self) -> int:
        return len(self._entries)

    def now_ns(self) -> int:
        """The injected clock; read it *before* stat-ing the files you will record."""
        return self._clock()

    @classmethod
    def load(
        cls,
        fs: StateFiles,
        path: str,
        *,
        hash_name: HashName,
        clock: Callable[[], int],
        racy_margin_ns: int = DEFAULT_RACY_MARGIN_NS,
        max_unused_days: int = DEFAULT_MAX_UNUSED_DAYS,
    ) -> StatCache:
        """Load the cache at ``path``; a missing or unusable file gives an empty cache."""
        cache = cls(
            hash_name=hash_name,
            clock=clock,
            racy_margin_ns=racy_margin_ns,
            max_unused_days=max_unused_days,
        )
        try:
            snapshot_ns = fs.stat(path).st_mtime_ns
            data = fs.read_bytes(path)
        except FileNotFoundError:
            return cache
        except OSError as exc:
            cache.load_problem = f"cannot read {path}: {exc}"
            return cache
        entries = _decode(data, hash_name)
        if isinstance(entries, str):
            cache.load_problem = f"ignored {path}: {entries}"
            cache._dirty = True  # rewrite it on the next save
            return cache
        cache._entries = entries
        cache._snapshot_ns = snapshot_ns
        return cache

    def lookup(self, path: str, st: FileStat) -> Digest | None:
        """The recorded digest of ``path`` if ``st`` proves the file unchanged, else None."""
        record = self._entries.get(path)
        if record is None:
            return None
        try:
            mode, ino, size, mtime_ns, ctime_ns, day, raw = _RECORD.unpack(record)
        except (struct.error, TypeError):
            return None  # malformed (the file passed its checksum, so this is not expected)
        if (
            mtime_ns != st.st_mtime_ns
            or size != st.st_size
            or ino != st.st_ino
            or ctime_ns != st.st_ctime_ns
            or mode != st.st_mode
        ):
            return None
        snapshot = self._snapshot_ns
        if (mtime_ns >= snapshot or ctime_ns >= snapshot) and path not in self._fresh:
            return None  # racy: modified in the same tick the cache was written
        if day != self._today:
            self._stale_day.add(path)
        return Digest(raw)

    def record(self, path: str, st: FileStat, digest: Digest, *, observed_ns: int) -> bool:
        """Remember that ``path`` with stat ``st`` has content ``digest``.

        Args:
            observed_ns: Clock reading taken before ``st`` was stat-ed and the bytes read.

        Returns:
            False when the entry is racy (too recent to be trusted later) and was not kept.
        """
        bound = observed_ns - self._racy_margin_ns
        if st.st_mtime_ns >= bound or st.st_ctime_ns >= bound:
            if self._entries.pop(path, None) is not None:
                self._dirty = True
            self._fresh.discard(path)
            return False
        self._entries[path] = _RECORD.pack(
            st.st_mode,
            st.st_ino,
            st.st_size,
            st.st_mtime_ns,
            st.st_ctime_ns,
            self._today,
            digest.raw,
        )
        self._fresh.add(path)
        self._stale_day.discard(path)
        self._dirty = True
        return True

    def save(self, fs: StateFiles, path: str) -> bool:
        """Persist atomically when anything changed; returns whether a file was written.

        An ``OSError`` while writing (read-only workspace, full disk) is swallowed: the cache is
        an optimisation, and the next run simply hashes again.
        """
        today = self._today
        entries = self._entries
        day = struct.pack("<I", today)
        for used in self._stale_day:
            record = entries.get(used)
            if record is not None:
                entries[used] = record[:_DAY_OFFSET] + day + record[_DAY_OFFSET + 4 :]
                self._dirty = True
        self._stale_day.clear()
        if not self._dirty:
            return False
        oldest = today - self._max_unused_days
        day_of = _day_of
        stale = [p for p, record in entries.items() if day_of(record) < oldest]
        for p in stale:
            del entries[p]
        payload = marshal.dumps((self.hash_name.value, entries))
        header = _HEADER.pack(
            MAGIC, FORMAT_VERSION, marshal.version, blake3.blake3(payload).digest()
        )
        try:
            fs.write_atomic(path, header + payload)
            self._snapshot_ns = fs.stat(path).st_mtime_ns
        except OSError:
            return False
        self._dirty = False
        return True


def _day_of(record: bytes) -> int:
    """Last-used day of a record; -1 (so it is dropped on save) when malformed."""
    try:
        day: int = struct.unpack_from("<I", record, _DAY_OFFSET)[0]
    except (struct.error, TypeError):
        return -1
    if len(record) != _RECORD.size:
        return -1
    return day


def _decode(data: bytes, hash_name: HashName) -> dict[str, bytes] | str:
    """The entries of a persisted cache, or why the file cannot be used."""
    if len(data) < _HEADER.size:
        return "truncated header"
    magic, version, marshal_version, checksum = _HEADER.unpack_from(data)
    if magic != MAGIC:
        return "not a stat cache file"
    if version != FORMAT_VERSION or marshal_version != marshal.version:
        return f"format {version}/{marshal_version} is not {FORMAT_VERSION}/{marshal.version}"
    payload = memoryview(data)[_HEADER.size :]
    if blake3.blake3(payload).digest() != checksum:
        return "checksum mismatch (torn or corrupt file)"
    try:
        loaded = marshal.loads(payload)
    except (EOFError, ValueError, TypeError) as exc:
        return f"undecodable payload: {exc}"
    if not (isinstance(loaded, tuple) and len(loaded) == 2 and isinstance(loaded[1], dict)):
        return "unexpected payload shape"
    name = loaded[0]
    entries: dict[str, bytes] = loaded[1]
    if name != hash_name.value:
        return f"written for hash function {name!r}"
    # Entries are not checked one by one here (that was a third of the load time): the
    # checksum rules out damage, and lookup() treats a malformed record as a miss.
    return entries
