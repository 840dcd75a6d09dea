"""Finding the files a task materialised: its output patterns against the workspace on disk.

Spec coverage:
* CACHE-012/017 — the files to store after a successful run are the regular files (or
  symlinks to regular files) matched by the task's output patterns; the cache stores a
  relative link into the other outputs as a link, any other as its content (issue 12). A
  dangling link is no output.
* EXEC-020 — the same list feeds the scheduler's output-overlap check.
* PATH — the walk starts at each pattern's literal prefix and never enters the workspace's
  ``.haz/`` or ``.git/``.
* Issue 13 — a name reserved for haz's restore staging files (``.haz-restore-*``,
  :mod:`hazremote.cache.staging`) is never collected, nor entered as a directory; the stale
  ones a killed restore left in a walked directory are removed on the way.
Out of scope: hashing and copying (the cache tier does both in one pass while storing).
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from hazremote.cache.staging import is_staging_name, staging_stale
from hazremote.domain.patterns import CONTROL_DIRS, PathPattern

__all__ = ["materialised_outputs"]


def _is_file(path: str) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def _remove_if_stale(entry: os.DirEntry[str]) -> None:
    with contextlib.suppress(OSError):
        if staging_stale(entry.name, entry.stat(follow_symlinks=False)):
            os.unlink(entry.path)


def materialised_outputs(root: Path, patterns: Iterable[PathPattern]) -> tuple[str, ...]:
    """Workspace-absolute paths of the files matched by ``patterns`` now, sorted, unique."""
    base = str(root).rstrip("/")
    found: set[str] = set()
    for pattern in patterns:
        if pattern.negated:
            continue
        if not pattern.glob:
            if not is_staging_name(pattern.absolute.rpartition("/")[2]) and _is_file(
                base + pattern.absolute
            ):
                found.add(pattern.absolute)
            continue
        start = pattern.literal_prefix
        stack = [start]
        seen_dirs: set[tuple[int, int]] = set()
        while stack:
            directory = stack.pop()
            try:
                st = os.stat(base + directory)
                identity = (st.st_dev, st.st_ino)
                if identity in seen_dirs:  # a symlink loop
                    continue
                seen_dirs.add(identity)
                entries = list(os.scandir(base + directory))
            except OSError:
                continue
            prefix = "" if directory == "/" else directory
            for entry in entries:
                rel = f"{prefix}/{entry.name}"
                if directory == "/" and entry.name in CONTROL_DIRS:
                    continue
                if is_staging_name(entry.name):
                    _remove_if_stale(entry)
                    continue
                try:
                    if entry.is_dir():
                        stack.append(rel)
                    elif entry.is_file() and pattern.matches(rel):
                        found.add(rel)
                except OSError:
                    continue
    return tuple(sorted(found))
