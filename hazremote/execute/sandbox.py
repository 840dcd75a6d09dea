"""The sandbox: one action run in a fresh directory laid out like the workspace, then removed.

A worker runs every remote action here (its inputs come from its input cache); ``haz run
--sandbox`` will run a local one the same way (its inputs come from the workspace). The
:class:`InputSource` port says where an input's bytes are; nothing else differs.

Spec coverage:
* RX-004 — inputs materialised under a fresh root; the command run; outputs collected by pattern.
* EXEC-008 — run through the :class:`ProcessSpawner` as ``haz run`` does: exact env, own group.
* EXEC-012..015 — timeout, grace period and cancellation are the spawner's, unchanged.
* CACHE-023 — outputs and streams equal those of the same task run in the workspace.
* SEC-001 — absolute, ``..``, reserved or clashing paths and setuid/setgid/sticky modes are
  refused before anything is written; directories are opened ``O_NOFOLLOW``; an output that
  resolves outside the sandbox is refused.
* SEC-001 — inputs are copies (reflink, ``copy_file_range``, else read/write): a task writing
  to its inputs changes neither the source nor another sandbox (docs/decisions.md).
Out of scope: fetching input blobs (the source's), uploading and publishing results (the
worker's), and running as another uid.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from hazremote.cache.codec import BlobCodec
from hazremote.cache.collect import Collected, collect, matching_files
from hazremote.cache.materialise import (
    MODE_MASK,
    NEW_FILE_FLAGS,
    DirectoryFds,
    PathRefused,
    masked_mode,
)
from hazremote.cache.staging import reserved_path_problem
from hazremote.domain.digest import Digest
from hazremote.domain.model import DEFAULT_GRACE_PERIOD_S
from hazremote.domain.patterns import PathPattern, parse_pattern
from hazremote.errors import HazError, PatternError
from hazremote.execute.observers import StreamFiles
from hazremote.execute.spawn import (
    CancelSignal,
    OutputCallback,
    ProcessOutcome,
    ProcessSpawner,
    SpawnRequest,
)

__all__ = [
    "InputSource",
    "Sandbox",
    "SandboxAction",
    "SandboxInput",
    "SandboxRefused",
    "SandboxResult",
    "WorkspaceInputs",
    "check_action",
    "copy_file",
    "materialise_inputs",
    "remove_tree",
    "unique_inputs",
]

#: Linux ``FICLONE``: share the source's extents copy-on-write (btrfs, XFS, bcachefs).
_FICLONE = 0x40049409
_COPY_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True, kw_only=True)
class SandboxInput:
    """One input file (RX-002): workspace-relative ``path`` (``src/a.c``), its content's
    ``digest`` and ``size``, and its ``mode`` (permission bits only)."""

    path: str
    digest: Digest
    size: int
    mode: int = 0o644


@dataclass(frozen=True, slots=True, kw_only=True)
class SandboxAction:
    """What runs in a sandbox (the fields of an RX-002 action that matter here).

    Attributes:
        argv: Program and arguments.
        env: The complete, effective environment (EXEC-008).
        cwd: Workspace-relative working directory (the project's; ``.`` for the root).
        inputs: The files made present; nothing else is.
        outputs: Workspace-relative output patterns (already resolved from the project).
        timeout_s: The task's timeout; ``None`` for none.
        grace_period_s: SIGTERM → SIGKILL delay on timeout or cancellation.
        directories: Workspace-relative directories that exist before the task runs (the
            outputs' parents that exist in the client's workspace, RX-008).
    """

    argv: tuple[str, ...]
    env: Mapping[str, str]
    cwd: str
    inputs: tuple[SandboxInput, ...]
    outputs: tuple[str, ...]
    timeout_s: float | None = None
    grace_period_s: float = DEFAULT_GRACE_PERIOD_S
    directories: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class SandboxResult:
    """What running an action in a sandbox gave.

    Attributes:
        process: The process facts; ``None`` when it never started (``problem`` says why).
        collected: The outputs (records + blobs in the caller's ``blobs_dir``), collected only
            when the process succeeded and ``problem`` is None.
        problem: Why the action failed around its process: an input missing from the source
            or not its recorded size, an output that cannot be recorded.
    """

    process: ProcessOutcome | None
    collected: Collected | None
    problem: str | None = None


class SandboxRefused(HazError):
    """The action is hostile or malformed (SEC-001): nothing was created for it."""


class InputSource(Protocol):
    """Port: where the bytes of an input are (a worker's input cache; the workspace)."""

    def locate(self, file: SandboxInput) -> Path | None:
        """A regular file holding ``file``'s bytes, or None when there is none."""
        ...


class WorkspaceInputs:
    """An :class:`InputSource` reading inputs from the workspace ``root`` itself (``haz run
    --sandbox``): the file at the input's path, never through a symlink in its place."""

    def __init__(self, root: Path) -> None:
        self._root = root

    def locate(self, file: SandboxInput) -> Path | None:
        path = self._root / file.path
        try:
            if not stat.S_ISREG(os.lstat(path).st_mode):
                return None
            # A symlinked directory on the way would take the bytes from elsewhere.
            if os.path.realpath(path) != os.path.join(os.path.realpath(self._root), file.path):
                return None
        except OSError:
            return None
        return path


# -- checks ----------------------------------------------------------------------------------


def _relative_path_problem(path: str) -> str | None:
    if path.startswith("/"):
        return "is absolute (paths are relative to the workspace root)"
    if path in ("", "."):
        return "is empty"
    problem = _segments_problem(path)
    if problem is not None:
        return problem
    return reserved_path_problem("/" + path)


def _segments_problem(path: str) -> str | None:
    if "\x00" in path:
        return "contains a NUL byte"
    for segment in path.split("/"):
        if segment == "":
            return "has an empty segment"
        if segment in (".", ".."):
            return f"has a {segment!r} segment (escaping is not allowed)"
    return None


def unique_inputs(inputs: Sequence[SandboxInput]) -> tuple[SandboxInput, ...]:
    """``inputs`` with each path once: a file listed twice with the same content and mode
    (a task's input that is also a predecessor's output) is one file.

    Raises:
        SandboxRefused: a path listed twice with different content or mode.
    """
    seen: dict[str, SandboxInput] = {}
    for file in inputs:
        known = seen.setdefault(file.path, file)
        if known is not file and (known.digest, known.size, known.mode) != (
            file.digest,
            file.size,
            file.mode,
        ):
            raise SandboxRefused(f"input path {file.path!r} is listed twice with other content")
    return tuple(seen.values())


def check_action(action: SandboxAction) -> tuple[PathPattern, ...]:
    """SEC-001: refuse a hostile or malformed action before anything is written.

    Returns:
        Its output patterns, parsed.

    Raises:
        SandboxRefused: naming the path or mode at fault.
    """
    files: set[str] = set()
    for file in unique_inputs(action.inputs):
        problem = _relative_path_problem(file.path)
        if problem is not None:
            raise SandboxRefused(f"input path {file.path!r} {problem}")
        if file.mode & ~MODE_MASK:
            raise SandboxRefused(
                f"input {file.path!r} has mode {file.mode:o}: setuid, setgid and sticky bits "
                "are refused"
            )
        if file.size < 0:
            raise SandboxRefused(f"input {file.path!r} has a negative size")
        files.add(file.path)
    for path in files:
        parent = path.rpartition("/")[0]
        while parent:
            if parent in files:
                raise SandboxRefused(f"input path {path!r} lies under the input file {parent!r}")
            parent = parent.rpartition("/")[0]
    for directory in action.directories:
        problem = _relative_path_problem(directory)
        if problem is not None:
            raise SandboxRefused(f"directory {directory!r} {problem}")
        if directory in files:
            raise SandboxRefused(f"directory {directory!r} is an input file")
    if action.cwd != ".":
        problem = _relative_path_problem(action.cwd)
        if problem is not None:
            raise SandboxRefused(f"working directory {action.cwd!r} {problem}")
        if action.cwd in files:
            raise SandboxRefused(f"working directory {action.cwd!r} is an input file")
    patterns: list[PathPattern] = []
    for text in action.outputs:
        if text.startswith("/"):
            raise SandboxRefused(
                f"output pattern {text!r} is absolute (patterns are relative to the workspace root)"
            )
        try:
            patterns.append(parse_pattern(text, project_dir=""))
        except PatternError as exc:
            raise SandboxRefused(f"output pattern {exc}") from None
    return tuple(patterns)


# -- materialising ---------------------------------------------------------------------------


class _InputProblem(Exception):
    """An input cannot be made present (missing from the source, wrong size)."""


def copy_file(src_fd: int, dst_fd: int) -> None:
    """Copy the whole of ``src_fd`` into the empty ``dst_fd``: a reflink where the file system
    shares extents, else ``copy_file_range`` (in-kernel), else read/write.

    Raises:
        OSError: the copy failed.
    """
    with contextlib.suppress(OSError):
        fcntl.ioctl(dst_fd, _FICLONE, src_fd)
        return
    try:
        while os.copy_file_range(src_fd, dst_fd, _COPY_CHUNK * 64):
            pass
        return
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise
    os.lseek(src_fd, 0, os.SEEK_SET)
    os.lseek(dst_fd, 0, os.SEEK_SET)
    os.ftruncate(dst_fd, 0)
    while chunk := os.read(src_fd, _COPY_CHUNK):
        view = memoryview(chunk)
        while view:
            view = view[os.write(dst_fd, view) :]


def materialise_inputs(
    root: Path, files: Sequence[SandboxInput], source: InputSource, *, link: bool = False
) -> None:
    """Write ``files`` under the fresh directory ``root`` from ``source``, through directory
    descriptors opened ``O_NOFOLLOW``, modes masked (CACHE-019).

    ``link`` hard-links the source files instead of copying them: the task then shares their
    inodes, so only an action running as another uid (which cannot write the read-only
    source) may use it. :class:`Sandbox` always copies (docs/decisions.md, issue 15).

    Raises:
        PathRefused: a directory on the way is a symlink or a file.
        OSError: writing failed.
        _InputProblem: an input is missing from the source or not its recorded size.
    """
    with DirectoryFds(root) as dirs:
        for file in files:
            directory, _, name = ("/" + file.path).rpartition("/")
            dir_fd = dirs.fd(directory)
            found = source.locate(file)
            if found is None:
                raise _InputProblem(f"input {file.path!r} is missing ({file.digest.hex[:12]})")
            if link:
                os.link(found, name, dst_dir_fd=dir_fd, follow_symlinks=False)
                continue
            src_fd = os.open(found, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                if os.fstat(src_fd).st_size != file.size:
                    raise _InputProblem(
                        f"input {file.path!r} does not have its recorded size {file.size}"
                    )
                dst_fd = os.open(name, NEW_FILE_FLAGS, 0o600, dir_fd=dir_fd)
                try:
                    copy_file(src_fd, dst_fd)
                    os.fchmod(dst_fd, masked_mode(file.mode))
                finally:
                    os.close(dst_fd)
            finally:
                os.close(src_fd)


def remove_tree(path: Path) -> None:
    """Remove ``path`` entirely, even where the task took permissions away (chmod 000)."""

    def fix(_function: Callable[..., Any], failed: str, _exc: Any) -> None:
        parent = os.path.dirname(failed)
        with contextlib.suppress(OSError):
            os.chmod(parent, 0o700)
        with contextlib.suppress(OSError):
            if os.path.isdir(failed) and not os.path.islink(failed):
                os.chmod(failed, 0o700)
                shutil.rmtree(failed, onerror=fix)
            else:
                os.unlink(failed)

    if os.path.lexists(path):
        shutil.rmtree(path, onerror=fix)


# -- running ---------------------------------------------------------------------------------


class Sandbox:
    """Runs actions, each in its own fresh directory under ``base``, removed afterwards.

    Args:
        base: Where sandbox directories are made (created).
        inputs: Where input bytes come from.
        spawner: Runs the process (the ``SubprocessSpawner`` of ``haz run``).
        codec: Hashes (and compresses) collected outputs.
    """

    def __init__(
        self, *, base: Path, inputs: InputSource, spawner: ProcessSpawner, codec: BlobCodec
    ) -> None:
        self._base = base
        self._inputs = inputs
        self._spawner = spawner
        self._codec = codec

    async def run(
        self,
        action: SandboxAction,
        *,
        streams: StreamFiles,
        blobs_dir: Path,
        on_stdout: OutputCallback,
        on_stderr: OutputCallback,
        cancel: CancelSignal,
    ) -> SandboxResult:
        """RX-004: materialise, run (streaming live), collect on success, remove.

        Args:
            streams: Files (outside the sandbox) receiving the complete stdout / stderr.
            blobs_dir: An existing directory (outside the sandbox) receiving output blobs.

        Raises:
            SandboxRefused: before anything is created (:func:`check_action`).
            OSError: the sandbox or a spool could not be written.
        """
        patterns = check_action(action)
        self._base.mkdir(parents=True, exist_ok=True)
        root = Path(tempfile.mkdtemp(dir=self._base, prefix="sandbox-"))
        try:
            workspace = root / "ws"
            workspace.mkdir()
            try:
                await asyncio.to_thread(self._prepare, workspace, action)
            except _InputProblem as exc:
                return SandboxResult(process=None, collected=None, problem=str(exc))
            except PathRefused as exc:
                return SandboxResult(process=None, collected=None, problem=str(exc))
            process = await self._spawner.run(
                SpawnRequest(
                    argv=action.argv,
                    cwd=workspace if action.cwd == "." else workspace / action.cwd,
                    env=action.env,
                    stdout_spool=streams.stdout,
                    stderr_spool=streams.stderr,
                    timeout_s=action.timeout_s,
                    grace_period_s=action.grace_period_s,
                    hash_name=self._codec.hash_name,
                ),
                on_stdout=on_stdout,
                on_stderr=on_stderr,
                cancel=cancel,
            )
            if not process.succeeded:
                return SandboxResult(process=process, collected=None)
            try:
                collected = await asyncio.to_thread(self._collect, workspace, patterns, blobs_dir)
            except ValueError as exc:
                return SandboxResult(process=process, collected=None, problem=str(exc))
            return SandboxResult(process=process, collected=collected)
        finally:
            # The spawner has killed the process group and every tracked descendant.
            await asyncio.to_thread(remove_tree, root)

    def _prepare(self, workspace: Path, action: SandboxAction) -> None:
        materialise_inputs(workspace, unique_inputs(action.inputs), self._inputs)
        directories = action.directories + (() if action.cwd == "." else (action.cwd,))
        with DirectoryFds(workspace) as dirs:
            for directory in directories:
                dirs.fd("/" + directory)

    def _collect(
        self, workspace: Path, patterns: Sequence[PathPattern], blobs_dir: Path
    ) -> Collected:
        real_root = os.path.realpath(workspace)
        for path in matching_files(workspace, patterns):
            real = os.path.realpath(workspace / path[1:])
            if not real.startswith(real_root + "/"):
                raise ValueError(f"output {path[1:]!r} resolves outside the sandbox")
        return collect(workspace, patterns, blobs_dir=blobs_dir, codec=self._codec, fsync=False)
