"""Which keys a remote cache is known to hold, remembered locally between runs.

Spec coverage:
* RC-002 — in ``read-write`` mode a local hit the remote lacks is uploaded; to keep a fully
  local-hit run free of remote round trips, the keys confirmed on the remote (by a lookup,
  a remote hit, or a successful upload) are remembered per remote URL and namespace in
  ``.haz/state/remote-known-<digest>.bin``, and only local hits not known there are asked
  about. A confirmation is trusted for :data:`MAX_AGE_DAYS` days (the remote may collect
  old entries), then the key is asked about once more.
Out of scope: the remote calls themselves (:mod:`hazremote.remote.client`).

The file is rebuildable state: a torn, foreign or unreadable file counts as empty (the
next run asks again), and two runs saving at once may lose each other's additions (a
lookup later). Saves merge with what is on disk and publish atomically.
"""

from __future__ import annotations

import hashlib
import struct
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from hazremote.domain.digest import Digest
from hazremote.fileio import replace_file

__all__ = ["MAX_AGE_DAYS", "KnownRemoteKeys", "known_keys_path"]

#: How long a confirmation is trusted.
MAX_AGE_DAYS = 7
#: At most this many keys are kept (the most recently confirmed ones).
MAX_KEYS = 200_000
_MAGIC = b"HAZKNOWN"
_VERSION = 1
_HEADER = struct.Struct("<8sI")
_RECORD = struct.Struct("<32sI")  # key, day confirmed


def known_keys_path(root: Path, *, url: str, namespace: str) -> Path:
    """Where the known keys of remote ``url`` + ``namespace`` live in workspace ``root``."""
    digest = hashlib.sha256(f"{url}\0{namespace}".encode()).hexdigest()[:24]
    return root / ".haz" / "state" / f"remote-known-{digest}.bin"


def _today(clock: Callable[[], float]) -> int:
    return int(clock() // 86400)


def _read(path: Path) -> dict[bytes, int]:
    try:
        data = path.read_bytes()
    except OSError:
        return {}
    if len(data) < _HEADER.size:
        return {}
    magic, version = _HEADER.unpack_from(data)
    body = memoryview(data)[_HEADER.size :]
    if magic != _MAGIC or version != _VERSION or len(body) % _RECORD.size:
        return {}
    return dict(_RECORD.iter_unpack(body))


class KnownRemoteKeys:
    """The keys one remote (URL + namespace) is known to hold.

    Args:
        path: The state file (see :func:`known_keys_path`).
        clock: Wall clock (seconds since the epoch), for the age of confirmations.
    """

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self._path = path
        self._clock = clock
        self._today = _today(clock)
        oldest = self._today - MAX_AGE_DAYS
        self._days = {k: d for k, d in _read(path).items() if oldest < d <= self._today}
        self._added: dict[bytes, int] = {}

    def __contains__(self, key: Digest) -> bool:
        return key.raw in self._days

    def add(self, keys: Iterable[Digest]) -> None:
        """``keys`` are on the remote now (confirmed today)."""
        for key in keys:
            if self._days.get(key.raw) != self._today:
                self._days[key.raw] = self._today
                self._added[key.raw] = self._today

    def save(self) -> bool:
        """Merge what was confirmed in this run into the file; returns whether it wrote."""
        if not self._added:
            return False
        oldest = self._today - MAX_AGE_DAYS
        merged = {k: d for k, d in _read(self._path).items() if oldest < d <= self._today}
        for key, day in self._added.items():
            merged[key] = max(day, merged.get(key, day))
        if len(merged) > MAX_KEYS:
            merged = dict(sorted(merged.items(), key=lambda item: item[1])[-MAX_KEYS:])
        payload = _HEADER.pack(_MAGIC, _VERSION) + b"".join(
            _RECORD.pack(key, day) for key, day in merged.items()
        )
        try:
            replace_file(self._path, payload, prefix=".remote-known-")
        except OSError:
            return False  # rebuildable state: the next run asks the remote again
        self._added.clear()
        return True
