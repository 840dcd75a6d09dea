"""The safe materialiser: writing files under a root without ever following a symlink.

Directories are opened one segment at a time relative to their parent with ``O_NOFOLLOW``
(:class:`DirectoryFds`), and every file operation goes through those descriptors, so a symlink
swapped in after a check cannot redirect a write. Used by the cache restore and by a worker's
sandbox when it materialises an action's inputs.

Spec coverage:
* SEC-001 — an existing directory component that is a symlink is refused
  (:class:`PathRefused`, ``SYMLINK``), so nothing is ever created outside the root.
* CACHE-019 — modes are masked to :data:`MODE_MASK` (never setuid, setgid or sticky);
  new files are created with ``O_EXCL | O_NOFOLLOW`` (:data:`NEW_FILE_FLAGS`).
Out of scope: which paths may be written and verifying the bytes (the caller).
"""

from __future__ import annotations

import contextlib
import enum
import errno
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from hazremote.cache.codec import write_all

__all__ = [
    "DIR_FLAGS",
    "MODE_MASK",
    "NEW_FILE_FLAGS",
    "DirectoryFds",
    "PathRefused",
    "Refusal",
    "chmod_nofollow",
    "masked_mode",
    "write_new_file",
]

#: CACHE-019: materialised modes never carry setuid, setgid or sticky bits.
MODE_MASK = 0o777
#: How every directory below the root is opened: never through a symlink.
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: How every new file is created: it must not exist, and a symlink in its place is refused.
NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def masked_mode(mode: int) -> int:
    """``mode``'s permission bits without setuid, setgid or sticky (CACHE-019)."""
    return mode & MODE_MASK


class Refusal(enum.Enum):
    SYMLINK = "symlink"  # SEC-001: writing through it could leave the root
    NOT_A_DIRECTORY = "not-a-directory"


class PathRefused(Exception):
    """A directory component of a path is a symlink or not a directory."""

    def __init__(self, refusal: Refusal, directory: str, message: str) -> None:
        super().__init__(message)
        self.refusal = refusal
        self.directory = directory


class DirectoryFds:
    """Directory descriptors under ``root``, opened without following symlinks.

    Directories are named root-absolute (``"/a/b"``; ``""`` is the root itself). Close it (or
    use it as a context manager) to release the descriptors.
    """

    def __init__(self, root: Path) -> None:
        """Open ``root``.

        Raises:
            OSError: ``root`` cannot be opened as a directory.
        """
        # The root itself may be reached through a symlink (e.g. /tmp on macOS): that is the
        # caller's choice of root, not a redirection by what is written below it.
        self._fds: dict[str, int] = {"": os.open(root, os.O_RDONLY | os.O_DIRECTORY)}
        self.created: list[tuple[int, str]] = []  # (parent fd, name), in creation order

    def __enter__(self) -> DirectoryFds:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def probe(self, directory: str) -> bool:
        """Check the existing part of ``directory``.

        Returns:
            True when the whole directory exists (and is now open).

        Raises:
            PathRefused: a component is a symlink or not a directory.
        """
        return self._open(directory, create=False) is not None

    def fd(self, directory: str) -> int:
        """Descriptor of ``directory``, creating missing components (recorded in
        :attr:`created`).

        Raises:
            PathRefused: as :meth:`probe`.
            OSError: a directory could not be created.
        """
        fd = self._open(directory, create=True)
        assert fd is not None
        return fd

    def remove_created(self) -> None:
        """Remove the directories this object created, if still empty (an abort)."""
        for parent_fd, name in reversed(self.created):
            # Not empty or already gone: someone else uses it now.
            with contextlib.suppress(OSError):
                os.rmdir(name, dir_fd=parent_fd)

    def _open(self, directory: str, *, create: bool) -> int | None:
        if directory in self._fds:
            return self._fds[directory]
        parent, _, name = directory.rpartition("/")
        parent_fd = self._open(parent, create=create)
        if parent_fd is None:
            return None
        try:
            fd = os.open(name, DIR_FLAGS, dir_fd=parent_fd)
        except FileNotFoundError:
            if not create:
                return None
            try:
                os.mkdir(name, 0o777, dir_fd=parent_fd)
                self.created.append((parent_fd, name))
            except FileExistsError:
                pass  # created meanwhile by a concurrent writer: use it (checked below)
            fd = os.open(name, DIR_FLAGS, dir_fd=parent_fd)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            info = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
            if stat.S_ISLNK(info.st_mode):
                raise PathRefused(
                    Refusal.SYMLINK,
                    directory,
                    f"{directory!r} is a symlink; restoring through it could write outside the "
                    "workspace",
                ) from None
            raise PathRefused(
                Refusal.NOT_A_DIRECTORY, directory, f"{directory!r} exists and is not a directory"
            ) from None
        self._fds[directory] = fd
        return fd


def chmod_nofollow(dir_fd: int, name: str, mode: int) -> None:
    """Set ``name``'s mode (masked) without following a symlink in its place."""
    # fchmodat() cannot refuse symlinks on Linux; open without following, then fchmod.
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        os.fchmod(fd, masked_mode(mode))
    finally:
        os.close(fd)


def write_new_file(dirs: DirectoryFds, path: str, chunks: Iterable[bytes], *, mode: int) -> None:
    """Create the root-absolute ``path`` (it must not exist) holding ``chunks``, mode masked.

    Missing directories are created. A partial file is removed when writing fails.

    Raises:
        PathRefused: a directory component is a symlink or not a directory.
        OSError: ``path`` exists (``FileExistsError``; also when it is a symlink) or writing
            failed.
    """
    directory, _, name = path.rpartition("/")
    dir_fd = dirs.fd(directory)
    fd = os.open(name, NEW_FILE_FLAGS, 0o600, dir_fd=dir_fd)
    try:
        for chunk in chunks:
            write_all(fd, chunk)
        os.fchmod(fd, masked_mode(mode))
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(name, dir_fd=dir_fd)
        raise
    os.close(fd)
