"""Names reserved for a restore's staging files, and removing the ones a dead run left.

Every name starting with :data:`STAGING_PREFIX` (``.haz-restore-``) is reserved for haz: it is
never collected, stored or restored. A staging file is ``.haz-restore-<pid>-<random>``; it is
stale when its process is gone or it is older than :data:`STALE_AFTER_S`, and stale files are
removed by the next restore into, or output collection over, their directory.

Spec coverage:
* CACHE-019..020 — what a killed restore leaves is never published or stored, and is removed.
* SEC-001 — :func:`reserved_path_problem`: nothing in `.git`, `/.haz` or a staging name.
Out of scope: the local cache's own ``.tmp-`` staging directories (:mod:`.local`).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import time

__all__ = [
    "STAGING_PREFIX",
    "STALE_AFTER_S",
    "is_staging_name",
    "remove_stale_staging",
    "reserved_path_problem",
    "staging_name",
    "staging_stale",
]

#: Names starting with this are reserved for haz's restore staging files.
STAGING_PREFIX = ".haz-restore-"
#: A staging file older than this is stale even when a process with its pid exists (no
#: restore takes a day; a pid may have been reused).
STALE_AFTER_S = 24 * 3600.0


def is_staging_name(name: str) -> bool:
    """True when ``name`` (one path segment) is reserved for a staging file."""
    return name.startswith(STAGING_PREFIX)


def staging_name() -> str:
    """A fresh staging name owned by this process."""
    return f"{STAGING_PREFIX}{os.getpid()}-{secrets.token_hex(8)}"


def _owner(name: str) -> int | None:
    pid, sep, rest = name[len(STAGING_PREFIX) :].partition("-")
    if not sep or not rest or not pid.isdigit() or pid.startswith("0"):
        return None
    return int(pid)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, belongs to another user
    except (OverflowError, OSError):
        return False  # not a pid this system can have
    return True


def staging_stale(name: str, info: os.stat_result, *, now: float | None = None) -> bool:
    """Whether the staging file ``name`` (stat ``info``, not followed) is a dead run's."""
    if not (stat.S_ISREG(info.st_mode) or stat.S_ISLNK(info.st_mode)):
        return False  # a directory or special file so named is not ours to remove
    current = time.time() if now is None else now
    if current - info.st_mtime >= STALE_AFTER_S:
        return True
    owner = _owner(name)
    return owner is not None and not _alive(owner)


def remove_stale_staging(directory: int | str) -> int:
    """Remove the stale staging files directly in ``directory`` (a descriptor or a path).

    Returns:
        How many were removed; errors (a file gone meanwhile, no permission) are ignored.
    """
    removed = 0
    try:
        entries = [e.name for e in os.scandir(directory) if is_staging_name(e.name)]
    except OSError:
        return 0
    dir_fd = directory if isinstance(directory, int) else None
    for name in entries:
        path = name if dir_fd is not None else os.path.join(str(directory), name)
        with contextlib.suppress(OSError):
            if staging_stale(name, os.stat(path, dir_fd=dir_fd, follow_symlinks=False)):
                os.unlink(path, dir_fd=dir_fd)
                removed += 1
    return removed


def reserved_path_problem(path: str) -> str | None:
    """Why no output may be restored at the workspace-absolute ``path``, or None."""
    segments = path[1:].split("/")
    if ".git" in segments[:-1] or segments[-1] == ".git":
        return "is inside a .git directory"
    if segments[0] == ".haz":
        return "is inside the workspace's .haz directory"
    if is_staging_name(segments[-1]):
        return "has a name reserved for haz's restore staging files (.haz-restore-*)"
    return None
