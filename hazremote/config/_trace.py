"""What a workspace load looked at, and in which state: the key of its snapshot.

A :data:`Trace` maps the absolute path of every file the load read or probed and every
directory it listed to its :data:`Signature` *as the load saw it*: taken from the open file
(``fstat``) or just before listing, ``None`` for a path that did not exist. The load is a
function of those files and listings alone, so while every path still has its signature the
load's result is the same (:mod:`hazremote.config.snapshot`).
"""

from __future__ import annotations

import os
import stat

__all__ = ["Signature", "Trace", "path_signature", "stat_signature"]

#: (file type bits, inode, size, mtime ns, ctime ns), or None for a path that did not exist.
Signature = tuple[int, int, int, int, int] | None
Trace = dict[str, Signature]


def stat_signature(info: os.stat_result) -> Signature:
    return (
        stat.S_IFMT(info.st_mode),
        info.st_ino,
        info.st_size,
        info.st_mtime_ns,
        info.st_ctime_ns,
    )


def path_signature(path: str) -> Signature:
    """The signature of ``path`` now (symlinks followed, as the loader's reads follow them)."""
    try:
        return stat_signature(os.stat(path))
    except (FileNotFoundError, NotADirectoryError):
        return None
