"""What a cache tier answers, as values: lookup, store and restore results.

Spec coverage:
* CACHE-014..016 — :class:`LookupStatus`; a miss is a value, never an exception.
* CACHE-017..018 — :class:`StoreResult`: a failed store is a status with a warning.
* CACHE-019..020, SEC-001 — :class:`RestoreResult`: bad or hostile data is a status.
Out of scope: the tiers themselves (``hazremote.cache.local``, ``hazremote.remote``) and the
port the lifecycle asks them through, in order (:mod:`hazremote.cache.tiers`).
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from hazremote.cache.manifest import Manifest
from hazremote.domain.digest import Digest

__all__ = [
    "ByteSink",
    "KnownDigests",
    "LookupResult",
    "LookupStatus",
    "OutputFile",
    "RestoreResult",
    "RestoreStatus",
    "StoreResult",
    "StoreStatus",
]

#: Receives recorded stdout/stderr bytes in chunks (EXEC-017 replays them through the observer).
ByteSink = Callable[[bytes], None]


class KnownDigests(Protocol):
    """The caller's stat cache, asked before an existing output is re-read (CACHE-020);
    :class:`hazremote.keys.statcache.StatCache` is one.

    Paths are workspace-absolute; ``st`` is the ``lstat`` of the regular file at that path.
    """

    def now_ns(self) -> int:
        """The clock to read *before* stat-ing a file whose digest will be reported."""
        ...

    def lookup(self, path: str, st: os.stat_result) -> Digest | None:
        """The digest of the file if ``st`` proves it unchanged since it was recorded."""
        ...

    def record(self, path: str, st: os.stat_result, digest: Digest, *, observed_ns: int) -> object:
        """The restore hashed the file (stat ``st``, clock ``observed_ns`` read before)."""
        ...


class LookupStatus(enum.Enum):
    """CACHE-016 ``lookup_status`` as ``haz why`` prints it."""

    HIT = "hit"
    MISS_NO_ENTRY = "miss-no-entry"
    MISS_SCHEMA_MISMATCH = "miss-schema-mismatch"
    MISS_CORRUPT = "miss-corrupt"


@dataclass(frozen=True, slots=True, kw_only=True)
class LookupResult:
    """``manifest`` is set exactly when ``status`` is HIT; ``detail`` says why it missed."""

    status: LookupStatus
    manifest: Manifest | None = None
    detail: str = ""

    @property
    def hit(self) -> bool:
        return self.status is LookupStatus.HIT


@dataclass(frozen=True, slots=True, kw_only=True)
class OutputFile:
    """An output to store: its workspace-absolute ``path`` and the file holding its bytes now."""

    path: str
    source: Path


class StoreStatus(enum.Enum):
    STORED = "stored"
    ALREADY_PRESENT = "already-present"  # another run stored a valid entry first: success
    FAILED = "failed"


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreResult:
    """Outcome of a store.

    Attributes:
        status: What happened.
        manifest: The manifest describing *this* run's files (also on ALREADY_PRESENT, where
            the cache keeps the entry stored first); ``None`` when the store failed.
        warning: One line for the user when the store failed (the task still succeeded).
    """

    status: StoreStatus
    manifest: Manifest | None = None
    warning: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not StoreStatus.FAILED


class RestoreStatus(enum.Enum):
    RESTORED = "restored"
    CORRUPT = "corrupt"  # a blob is missing, unreadable or has the wrong bytes
    UNSAFE = "unsafe"  # SEC-001: the entry would write outside its declared outputs
    FAILED = "failed"  # the workspace could not be written (I/O error, a directory in the way)


@dataclass(frozen=True, slots=True, kw_only=True)
class RestoreResult:
    """Outcome of a restore; anything but RESTORED means "treat as a miss and run the task".

    Attributes:
        status: What happened.
        message: Why, for a warning or ``haz why``; empty on success.
        written: Outputs written (renamed into place).
        unchanged: Outputs already present with the recorded bytes (mode fixed if needed).
        entry_removed: The tier dropped the entry because its data was at fault.
    """

    status: RestoreStatus
    message: str = ""
    written: int = 0
    unchanged: int = 0
    entry_removed: bool = False

    @property
    def ok(self) -> bool:
        return self.status is RestoreStatus.RESTORED
