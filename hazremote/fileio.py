"""File writing shared by the client and the service: complete writes and durable renames.

Spec coverage:
* §6 — a file is replaced whole or not at all (:func:`replace_file`); a rename is durable
  only once its directory is flushed (:func:`fsync_dir`).
Out of scope: what is written where (the caches and stores).
"""

from __future__ import annotations

import contextlib
import os
import tempfile

__all__ = ["fsync_dir", "replace_file", "write_all"]


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


def replace_file(
    path: str | os.PathLike[str], data: bytes, *, prefix: str = ".tmp-", fsync: bool = False
) -> None:
    """Replace ``path`` with ``data`` atomically: a reader sees the old file or the new one,
    never a part. The temp file (``prefix`` + random, beside ``path``) is removed on failure;
    with ``fsync`` the data and the rename are on disk when this returns.

    Raises:
        OSError: the directory cannot be created or written.
    """
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=directory, prefix=prefix)
    try:
        try:
            write_all(fd, data)
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    if fsync:
        fsync_dir(directory)
