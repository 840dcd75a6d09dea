"""Writing a manifest's outputs into the workspace, safely and all-or-nothing.

Every file operation goes through directory descriptors opened with ``O_NOFOLLOW``
(:mod:`hazremote.cache.materialise`), so a symlink swapped in after the checks cannot
redirect a write.

Spec coverage:
* CACHE-019..020 — outputs staged beside their destination, verified, renamed after all verified.
* CACHE-019..020 — an output already present with the recorded size and digest is left alone.
* CACHE-019..020 — a link is staged with ``symlinkat`` and renamed into place after its target.
* CACHE-023 — restored bytes, modes and streams equal the recorded ones.
* SEC-001 — undeclared paths, ``..`` or a symlinked parent fail before anything is written.
* SEC-001 — never into ``.git`` or ``/.haz``; links re-checked (:func:`output_links_problem`).
* CACHE-019..020 — staging names come from :mod:`.staging`; a dead run's leftovers are removed.
Out of scope: finding blobs (a :class:`BlobReader` supplies verified bytes) and what happens
to an entry at fault (the tier decides).
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from hazremote.cache.codec import CHUNK_SIZE, BlobCorrupt, write_all
from hazremote.cache.manifest import (
    Manifest,
    OutputRecord,
    StreamRecord,
    output_links_problem,
    workspace_path_problem,
)
from hazremote.cache.materialise import (
    MODE_MASK,
    NEW_FILE_FLAGS,
    DirectoryFds,
    PathRefused,
    Refusal,
    chmod_nofollow,
)
from hazremote.cache.staging import (
    remove_stale_staging,
    reserved_path_problem,
    staging_name,
)
from hazremote.cache.tier import ByteSink, KnownDigests, RestoreResult, RestoreStatus
from hazremote.domain.digest import Digest, new_hasher
from hazremote.domain.model import HashName
from hazremote.domain.patterns import PathPattern

__all__ = [
    "RESTORED_MODE_MASK",
    "BlobReader",
    "RestoreOutcome",
    "reserved_path_problem",
    "restore_into_workspace",
]

#: CACHE-019: restored modes never carry setuid, setgid or sticky bits.
RESTORED_MODE_MASK = MODE_MASK


class BlobReader(Protocol):
    """Supplies the bytes of a manifest's blobs, verified while they are produced."""

    def decode_output(self, record: OutputRecord, write: Callable[[bytes], object]) -> None:
        """Raises BlobCorrupt on missing or wrong bytes; passes ``write``'s OSError through."""
        ...

    def decode_stream(
        self, name: str, record: StreamRecord, write: Callable[[bytes], object]
    ) -> None:
        """``name`` is ``stdout`` or ``stderr``; errors as :meth:`decode_output`."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class RestoreOutcome:
    """The result, and whether the entry's data (not the workspace) caused a failure."""

    result: RestoreResult
    entry_at_fault: bool


class _Refused(Exception):
    def __init__(self, status: RestoreStatus, message: str, *, entry_at_fault: bool) -> None:
        super().__init__(message)
        self.status = status
        self.entry_at_fault = entry_at_fault


def _check_paths(manifest: Manifest, patterns: Sequence[PathPattern]) -> None:
    """SEC-001 checks that need no disk: shape, declared outputs, file/directory conflicts."""
    allowed = [p for p in patterns if not p.negated]
    files = {o.path for o in manifest.outputs}
    for record in manifest.outputs:
        problem = workspace_path_problem(record.path) or reserved_path_problem(record.path)
        if problem is not None:
            raise _Refused(
                RestoreStatus.UNSAFE, f"output {record.path!r} {problem}", entry_at_fault=True
            )
        if not any(p.matches(record.path) for p in allowed):
            raise _Refused(
                RestoreStatus.UNSAFE,
                f"output {record.path!r} is not matched by the task's declared outputs",
                entry_at_fault=True,
            )
        parent = record.path.rpartition("/")[0]
        while parent:
            if parent in files:
                raise _Refused(
                    RestoreStatus.CORRUPT,
                    f"output {record.path!r} lies under another output, {parent!r}",
                    entry_at_fault=True,
                )
            parent = parent.rpartition("/")[0]
    link_problem = output_links_problem(manifest.outputs)
    if link_problem is not None:
        index, message = link_problem
        raise _Refused(
            RestoreStatus.UNSAFE,
            f"output {manifest.outputs[index].path!r}: {message}",
            entry_at_fault=True,
        )


class _Workspace(DirectoryFds):
    """The workspace's directory descriptors (:class:`DirectoryFds`), sweeping stale staging
    files where this restore writes."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self._swept: set[int] = set()

    def staging_fd(self, directory: str) -> int:
        """:meth:`fd`, after removing the staging files a dead run left in ``directory`` (once
        per restore: only where this restore writes, so a replay that writes nothing lists
        no directory)."""
        fd = self.fd(directory)
        if fd not in self._swept:
            self._swept.add(fd)
            remove_stale_staging(fd)
        return fd


def _hash_existing(fd: int, hash_name: HashName) -> Digest:
    hasher = new_hasher(hash_name)
    with os.fdopen(fd, "rb", closefd=False) as fh:
        while chunk := fh.read(CHUNK_SIZE):
            hasher.update(chunk)
    return Digest(hasher.digest())


@dataclass(frozen=True, slots=True, kw_only=True)
class _Staged:
    record: OutputRecord
    dir_fd: int
    name: str
    temp: str


@dataclass(frozen=True, slots=True, kw_only=True)
class _ModeFix:
    dir_fd: int
    name: str
    mode: int


def _is_current(
    ws: _Workspace,
    record: OutputRecord,
    known_digests: KnownDigests | None,
    hash_name: HashName,
    mode_fixes: list[_ModeFix],
) -> bool:
    """True when the destination already holds the recorded bytes.

    The caller's stat cache answers for an unchanged file; a file it does not know is hashed
    and reported to it, so the next replay reads nothing. A current file with other
    permission bits is noted in ``mode_fixes``, applied only when the whole restore publishes.
    """
    directory, _, name = record.path.rpartition("/")
    if not ws.probe(directory):
        return False
    dir_fd = ws.fd(directory)
    observed_ns = known_digests.now_ns() if known_digests is not None else 0
    try:
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(info.st_mode):
        raise _Refused(
            RestoreStatus.FAILED,
            f"output {record.path!r} is a directory in the workspace",
            entry_at_fault=False,
        )
    if record.symlink is not None:
        # The link's own text is all it holds; the bytes it resolves to are another output's,
        # verified (or found current) by this same restore.
        return stat.S_ISLNK(info.st_mode) and os.readlink(name, dir_fd=dir_fd) == record.symlink
    if not stat.S_ISREG(info.st_mode) or info.st_size != record.size:
        return False
    known = known_digests.lookup(record.path, info) if known_digests is not None else None
    if known is None:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        try:
            known = _hash_existing(fd, hash_name)
            info = os.fstat(fd)  # what was hashed, should the file have been swapped meanwhile
        finally:
            os.close(fd)
        if known_digests is not None:
            known_digests.record(record.path, info, known, observed_ns=observed_ns)
    if known != record.hash:
        return False
    wanted = record.mode & RESTORED_MODE_MASK
    if stat.S_IMODE(info.st_mode) != wanted:
        mode_fixes.append(_ModeFix(dir_fd=dir_fd, name=name, mode=wanted))
    return True


def _stage(ws: _Workspace, record: OutputRecord, blobs: BlobReader) -> _Staged:
    directory, _, name = record.path.rpartition("/")
    dir_fd = ws.staging_fd(directory)
    temp = staging_name()
    fd = os.open(temp, NEW_FILE_FLAGS, 0o600, dir_fd=dir_fd)
    staged = _Staged(record=record, dir_fd=dir_fd, name=name, temp=temp)
    try:
        blobs.decode_output(record, lambda data: write_all(fd, data))
        os.fchmod(fd, record.mode & RESTORED_MODE_MASK)
    except BaseException:
        os.close(fd)
        _unlink_quietly(staged)
        raise
    os.close(fd)
    return staged


def _stage_link(ws: _Workspace, record: OutputRecord) -> _Staged:
    """A link is created under a temporary name like a file, and renamed over whatever is at
    its path when everything verified: rename replaces a link or file, never follows one."""
    assert record.symlink is not None
    directory, _, name = record.path.rpartition("/")
    dir_fd = ws.staging_fd(directory)
    temp = staging_name()
    os.symlink(record.symlink, temp, dir_fd=dir_fd)
    return _Staged(record=record, dir_fd=dir_fd, name=name, temp=temp)


def _unlink_quietly(staged: _Staged) -> None:
    with contextlib.suppress(OSError):
        os.unlink(staged.temp, dir_fd=staged.dir_fd)


class _VerifiedStream:
    """A stream's verified bytes: in memory when small, else in an anonymous temp file."""

    def __init__(self, name: str, record: StreamRecord, blobs: BlobReader) -> None:
        self._data: bytes | None = None
        self._spool: BinaryIO | None = None
        if record.size <= CHUNK_SIZE:
            parts: list[bytes] = []
            blobs.decode_stream(name, record, parts.append)
            self._data = b"".join(parts)
        else:
            spool = tempfile.TemporaryFile()  # noqa: SIM115 - closed by emit()/close()
            self._spool = spool
            try:
                blobs.decode_stream(name, record, spool.write)
            except BaseException:
                spool.close()
                raise

    def emit(self, sink: ByteSink) -> None:
        if self._data is not None:
            if self._data:
                sink(self._data)
            return
        assert self._spool is not None
        with self._spool as spool:
            spool.seek(0)
            while chunk := spool.read(CHUNK_SIZE):
                sink(chunk)

    def close(self) -> None:
        if self._spool is not None:
            self._spool.close()


def restore_into_workspace(
    manifest: Manifest,
    *,
    workspace_root: Path,
    output_patterns: Sequence[PathPattern],
    stdout_sink: ByteSink,
    stderr_sink: ByteSink,
    known_digests: KnownDigests | None,
    blobs: BlobReader,
) -> RestoreOutcome:
    """Restore ``manifest`` into ``workspace_root``; see the module docstring for the rules.

    Exceptions raised by the sinks propagate (they belong to the caller); nothing else about
    the entry or the workspace raises.
    """
    hash_name = manifest.hash_function
    try:
        _check_paths(manifest, output_patterns)
        ws = _Workspace(workspace_root)
    except _Refused as refused:
        return _refused(refused)
    except OSError as exc:
        return _failed(f"workspace root cannot be opened: {exc}")
    staged: list[_Staged] = []
    streams: list[_VerifiedStream] = []
    try:
        # Phase 1: refuse before writing anything (symlinked parents, directories in the way).
        mode_fixes: list[_ModeFix] = []
        to_write = [
            r
            for r in manifest.outputs
            if not _is_current(ws, r, known_digests, hash_name, mode_fixes)
        ]
        unchanged = len(manifest.outputs) - len(to_write)
        # Phase 2: stage and verify everything; nothing is visible under its final name yet.
        # Links last, so each is published after the file it resolves to.
        for record in to_write:
            if record.symlink is None:
                staged.append(_stage(ws, record, blobs))
        for record in to_write:
            if record.symlink is not None:
                staged.append(_stage_link(ws, record))
        streams.append(_VerifiedStream("stdout", manifest.stdout, blobs))
        streams.append(_VerifiedStream("stderr", manifest.stderr, blobs))
        # Phase 3: publish.
        for item in staged:
            os.rename(item.temp, item.name, src_dir_fd=item.dir_fd, dst_dir_fd=item.dir_fd)
        for fix in mode_fixes:
            chmod_nofollow(fix.dir_fd, fix.name, fix.mode)
        written = len(staged)
        staged.clear()
    except _Refused as refused:
        return _abort(ws, staged, streams, _refused(refused))
    except PathRefused as refused:
        return _abort(ws, staged, streams, _path_refused(refused))
    except BlobCorrupt as exc:
        outcome = RestoreOutcome(
            result=RestoreResult(status=RestoreStatus.CORRUPT, message=str(exc)),
            entry_at_fault=True,
        )
        return _abort(ws, staged, streams, outcome)
    except OSError as exc:
        return _abort(ws, staged, streams, _failed(f"writing the workspace failed: {exc}"))
    finally:
        ws.close()
    stdout_stream, stderr_stream = streams
    stdout_stream.emit(stdout_sink)
    stderr_stream.emit(stderr_sink)
    return RestoreOutcome(
        result=RestoreResult(status=RestoreStatus.RESTORED, written=written, unchanged=unchanged),
        entry_at_fault=False,
    )


def _refused(refused: _Refused) -> RestoreOutcome:
    return RestoreOutcome(
        result=RestoreResult(status=refused.status, message=str(refused)),
        entry_at_fault=refused.entry_at_fault,
    )


def _path_refused(refused: PathRefused) -> RestoreOutcome:
    status = RestoreStatus.UNSAFE if refused.refusal is Refusal.SYMLINK else RestoreStatus.FAILED
    return RestoreOutcome(
        result=RestoreResult(status=status, message=str(refused)), entry_at_fault=False
    )


def _failed(message: str) -> RestoreOutcome:
    return RestoreOutcome(
        result=RestoreResult(status=RestoreStatus.FAILED, message=message), entry_at_fault=False
    )


def _abort(
    ws: _Workspace,
    staged: list[_Staged],
    streams: list[_VerifiedStream],
    outcome: RestoreOutcome,
) -> RestoreOutcome:
    for item in staged:
        _unlink_quietly(item)
    for stream in streams:
        stream.close()
    ws.remove_created()
    return outcome
