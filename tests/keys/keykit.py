"""Helpers of the key-derivation tests: tasks from pattern strings, files, a counting fake FS."""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from hazremote.domain.model import (
    Action,
    CommandAction,
    EnvSpec,
    HashName,
    Origin,
    ProjectFiles,
    Task,
    TaskSpec,
    frozen_map,
)
from hazremote.domain.patterns import parse_pattern
from hazremote.domain.refs import TaskId
from hazremote.keys.deriver import KeyDeriver
from hazremote.keys.fs import DirListing, FileStat, Filesystem, OsFilesystem, ReadableFile
from hazremote.keys.worktree import WorkTree

#: A clock far enough ahead that files written by a test are never "racy" for the insert rule.
LATER_NS = 3_600 * 1_000_000_000


def later_clock() -> int:
    return time.time_ns() + LATER_NS


def make_task(
    *,
    project: str = "lib",
    project_dir: str | None = None,
    name: str = "build",
    inputs: Sequence[str] | None = (),
    outputs: Sequence[str] = (),
    nested: Sequence[str] = (),
    action: Action | None = None,
    from_host: Sequence[str] = (),
    pass_through: Sequence[str] = (),
    override: Mapping[str, str] | None = None,
) -> Task:
    """A :class:`Task` whose patterns are written as in a ``haz.yml`` of ``project_dir``.

    ``inputs=None`` is a task without an ``inputs`` key (PATH default inputs), whose project
    has the other projects ``nested`` (workspace-relative directories) below it.
    """
    pdir = project if project_dir is None else project_dir
    spec = TaskSpec(
        name=name,
        action=action or CommandAction(argv=("true",)),
        inputs=None if inputs is None else tuple(inputs),
        outputs=tuple(outputs),
        env=EnvSpec(
            from_host=tuple(from_host),
            pass_through=tuple(pass_through),
            override=frozen_map(override),
        ),
        origin=Origin(file=f"{pdir}/haz.yml", key_path=f"tasks.{name}", line=None),
    )
    return Task(
        id=TaskId(project, name),
        project_dir=pdir,
        spec=spec,
        inputs=tuple(parse_pattern(p, project_dir=pdir, allow_negation=True) for p in inputs or ()),
        outputs=tuple(parse_pattern(p, project_dir=pdir) for p in outputs),
        default_inputs=None if inputs is not None else ProjectFiles(dir=pdir, nested=tuple(nested)),
    )


def write(root: Path, rel: str, content: bytes | str = b"", *, mode: int | None = None) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    if mode is not None:
        path.chmod(mode)
    return path


def settle(root: Path) -> None:
    """Wait until the file-system clock has moved past every timestamp under ``root``.

    The stat cache's snapshot rule distrusts entries as new as the cache file itself; a test
    that saves right after writing files waits here for the next timestamp tick (a condition,
    not a fixed sleep).
    """
    newest = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            st = os.lstat(os.path.join(dirpath, name))
            newest = max(newest, st.st_mtime_ns, st.st_ctime_ns)
    probe = root.parent / f".settle-{root.name}"
    while True:
        probe.write_bytes(b"")
        if os.stat(probe).st_mtime_ns > newest:
            probe.unlink()
            return
        time.sleep(0.001)


def open_deriver(
    root: Path,
    *,
    fs: Filesystem | None = None,
    hash_name: HashName = HashName.BLAKE3,
    host_env: Mapping[str, str] | None = None,
    clock: Callable[[], int] = later_clock,
    workers: int | None = 2,
    work_tree: WorkTree | None = None,
) -> KeyDeriver:
    return KeyDeriver.open(
        workspace_root=root,
        hash_name=hash_name,
        host_env=host_env or {},
        fs=fs,
        clock=clock,
        workers=workers,
        work_tree=work_tree,
    )


class _CountingFile:
    def __init__(self, inner: ReadableFile, reads: list[int]) -> None:
        self._inner = inner
        self._reads = reads

    def readinto(self, buffer: bytearray | memoryview, /) -> int | None:
        self._reads.append(len(buffer))
        return self._inner.readinto(buffer)

    def close(self) -> None:
        self._inner.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
        /,
    ) -> None:
        self.close()


class CountingFs:
    """A :class:`Filesystem` over the real one that counts calls and records read sizes.

    Attributes:
        calls: ``(method, path)`` → count.
        opened: Paths opened for reading, in order.
        read_sizes: Buffer sizes passed to ``readinto``, in order.
    """

    def __init__(self, inner: Filesystem | None = None) -> None:
        self._inner = inner or OsFilesystem()
        self.calls: Counter[tuple[str, str]] = Counter()
        self.opened: list[str] = []
        self.read_sizes: list[int] = []

    def count(self, method: str) -> int:
        return sum(n for (m, _), n in self.calls.items() if m == method)

    def reset(self) -> None:
        self.calls.clear()
        self.opened.clear()
        self.read_sizes.clear()

    def stat(self, path: str) -> FileStat:
        self.calls["stat", path] += 1
        return self._inner.stat(path)

    def lstat(self, path: str) -> FileStat:
        self.calls["lstat", path] += 1
        return self._inner.lstat(path)

    def exists(self, path: str) -> bool:
        self.calls["exists", path] += 1
        return self._inner.exists(path)

    def readlink(self, path: str) -> str:
        self.calls["readlink", path] += 1
        return self._inner.readlink(path)

    def list_dir(self, path: str) -> DirListing:
        self.calls["list_dir", path] += 1
        return self._inner.list_dir(path)

    def stat_entries(self, directory: str, names: Sequence[str]) -> list[FileStat | None]:
        for name in names:
            self.calls["stat_entries", f"{directory}/{name}"] += 1
        return self._inner.stat_entries(directory, names)

    def open_read(self, path: str) -> ReadableFile:
        self.calls["open_read", path] += 1
        self.opened.append(path)
        return _CountingFile(self._inner.open_read(path), self.read_sizes)

    def read_bytes(self, path: str) -> bytes:
        self.calls["read_bytes", path] += 1
        return self._inner.read_bytes(path)

    def write_atomic(self, path: str, data: bytes) -> None:
        self.calls["write_atomic", path] += 1
        self._inner.write_atomic(path, data)
