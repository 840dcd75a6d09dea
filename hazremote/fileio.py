"""File writing shared by the client and the service: complete writes and durable renames.

Spec coverage:
* §6 — a rename is durable only once its directory is flushed (:func:`fsync_dir`).
Out of scope: what is written where (the caches and stores).
"""

from __future__ import annotations

import os

__all__ = ["fsync_dir", "write_all"]


def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write every byte of ``data`` to ``fd`` (``os.write`` may write less than asked)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Flush directory ``path`` so the names created or renamed in it survive a crash."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
