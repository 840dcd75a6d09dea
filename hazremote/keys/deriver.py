"""The key deriver: one object per run that turns tasks into cache keys.

It owns the run's snapshot of the host environment, the stat cache, the file hasher and the
input resolver, and frames the resolved components with :func:`~hazremote.keys.framing.frame_key`.

Typical use by the executor::

    with KeyDeriver.open(workspace_root=root, hash_name=h, host_env=os.environ) as deriver:
        deriver.prefetch(run_set)                      # hash every known input in parallel
        ...
        derived = deriver.derive(task, predecessors)   # per task, level by level
        ...
        deriver.outputs_written(task.outputs)          # after a run or a restore wrote files
        deriver.outputs_digest(paths)                  # CACHE-007 of a run that was not stored
    # leaving the block saves the stat cache and stops the hashing pool

Spec coverage:
* CACHE-001..009 — :meth:`KeyDeriver.derive`; the host environment is snapshotted once per run.
* CACHE-007 — :meth:`KeyDeriver.outputs_digest`: the outputs digest of a run not stored.
* EXEC-008 — :meth:`KeyDeriver.process_env`.
Out of scope: where predecessor digests come from (the executor), cache lookups.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from hazremote.domain.digest import Digest
from hazremote.domain.model import HashName, Task
from hazremote.domain.patterns import PathPattern
from hazremote.domain.refs import TaskId
from hazremote.keys.components import InputFile, KeyComponents, PredecessorStreams
from hazremote.keys.framing import frame_key, outputs_digest
from hazremote.keys.fs import FileStat, Filesystem, OsFilesystem, is_executable, is_regular
from hazremote.keys.hashing import FileHasher
from hazremote.keys.resolve import (
    InputError,
    InputResolver,
    UnmatchedInput,
    build_components,
    effective_process_env,
    resolve_env,
)
from hazremote.keys.statcache import DEFAULT_RACY_MARGIN_NS, StatCache, statcache_path
from hazremote.keys.worktree import GitWorkTree, WorkTree

__all__ = ["DerivedKey", "KeyDeriver"]


@dataclass(frozen=True, slots=True, kw_only=True)
class DerivedKey:
    """A task's cache key and the components it was framed from (for the manifest)."""

    key: Digest
    components: KeyComponents


class KeyDeriver:
    """Derives cache keys for the tasks of one run.

    Args:
        workspace_root: Host path of the workspace root.
        hash_name: The workspace hash function.
        host_env: The host environment; copied once (the run's snapshot).
        fs: The file-system port.
        stat_cache: The (loaded) stat cache; saved by :meth:`save`.
        hasher: The file hasher (closed by :meth:`close`).
        stat_cache_path: Where :meth:`save` writes the stat cache; None to never save.
        work_tree: What git tracks or would track, for tasks without ``inputs`` (PATH); None
            treats the workspace as outside git.
    """

    def __init__(
        self,
        *,
        workspace_root: str | Path,
        hash_name: HashName,
        host_env: Mapping[str, str],
        fs: Filesystem,
        stat_cache: StatCache,
        hasher: FileHasher,
        stat_cache_path: str | None = None,
        work_tree: WorkTree | None = None,
    ) -> None:
        root = str(workspace_root).rstrip("/")
        self.hash_name = hash_name
        self.host_env: Mapping[str, str] = dict(host_env)
        self._root = root
        self._fs = fs
        self.stat_cache = stat_cache
        self._hasher = hasher
        self._stat_cache_path = stat_cache_path
        self.resolver = InputResolver(
            root=root, fs=fs, stat_cache=stat_cache, hasher=hasher, work_tree=work_tree
        )

    @classmethod
    def open(
        cls,
        *,
        workspace_root: str | Path,
        hash_name: HashName,
        host_env: Mapping[str, str],
        fs: Filesystem | None = None,
        clock: Callable[[], int] = time.time_ns,
        workers: int | None = None,
        racy_margin_ns: int = DEFAULT_RACY_MARGIN_NS,
        work_tree: WorkTree | None = None,
    ) -> KeyDeriver:
        """A deriver over the workspace's persisted stat cache (a bad cache file is ignored).

        ``work_tree`` defaults to ``git ls-files`` in the workspace root (PATH default inputs;
        git runs only if a task without ``inputs`` is resolved).
        """
        fs = fs if fs is not None else OsFilesystem()
        root = str(workspace_root).rstrip("/")
        path = statcache_path(root, hash_name)
        cache = StatCache.load(
            fs, path, hash_name=hash_name, clock=clock, racy_margin_ns=racy_margin_ns
        )
        hasher = FileHasher(fs=fs, hash_name=hash_name, workers=workers)
        return cls(
            workspace_root=root,
            hash_name=hash_name,
            host_env=host_env,
            fs=fs,
            stat_cache=cache,
            hasher=hasher,
            stat_cache_path=path,
            work_tree=work_tree if work_tree is not None else GitWorkTree(root=root),
        )

    def __enter__(self) -> KeyDeriver:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.save()
        finally:
            self.close()

    def prefetch(self, tasks: Iterable[Task]) -> dict[TaskId, InputError]:
        """Resolve the inputs of many tasks now, hashing unknown files in one parallel batch.

        Returns the tasks whose inputs cannot be resolved (they will fail when derived).
        """
        results = self.resolver.resolve_many(list(tasks))
        return {tid: r for tid, r in results.items() if isinstance(r, InputError)}

    def inputs(self, task: Task) -> tuple[InputFile, ...]:
        """CACHE-006 input files of ``task``.

        Raises:
            InputError: a literal input is missing, a directory, or a dangling symlink.
        """
        return self.resolver.resolve(task)

    def components(
        self, task: Task, predecessors: Iterable[PredecessorStreams] = ()
    ) -> KeyComponents:
        """Every component of ``task``'s key. Raises :class:`InputError` like :meth:`inputs`."""
        return build_components(
            task,
            inputs=self.resolver.resolve(task),
            predecessors=predecessors,
            env=resolve_env(task.spec.env, self.host_env),
        )

    def derive(self, task: Task, predecessors: Iterable[PredecessorStreams] = ()) -> DerivedKey:
        """CACHE-001..009: the key of ``task`` given its hard predecessors' stream digests.

        Raises:
            InputError: see :meth:`inputs`.
        """
        components = self.components(task, predecessors)
        return DerivedKey(key=frame_key(components, self.hash_name), components=components)

    def process_env(self, task: Task) -> dict[str, str]:
        """EXEC-008: the exact environment of ``task``'s process."""
        return effective_process_env(task.spec.env, self.host_env)

    def unmatched_inputs(self) -> tuple[UnmatchedInput, ...]:
        """PATH: input patterns that contributed no file to this run's keys (latest
        resolution of each task), for the run's warnings."""
        return self.resolver.unmatched()

    def outputs_written(self, patterns: Iterable[PathPattern]) -> None:
        """Tell the deriver that files matching ``patterns`` were written in this run."""
        self.resolver.invalidate(patterns)

    def outputs_digest(self, paths: Iterable[str]) -> Digest:
        """CACHE-007: the outputs digest of the files at workspace-absolute ``paths``.

        For a task whose run was not stored (``cache: false``, ``--no-cache``, a failed
        store); a stored run's digest comes from its manifest, whose blobs were hashed while
        stored. Digests come from the stat cache where it vouches for a file, else from the
        hasher (and are recorded). A path that is gone or no longer a regular file (symlinks
        are followed) is left out: no dependant can read it either.
        """
        observed_ns = self.stat_cache.now_ns()  # before any stat: the insert rule's bound
        files: list[tuple[str, bool, Digest]] = []
        pending: list[tuple[str, FileStat]] = []
        lookup = self.stat_cache.lookup
        for path in paths:
            try:
                st = self._fs.stat(self._root + path)
            except OSError:
                continue
            if not is_regular(st):
                continue
            digest = lookup(path, st)
            if digest is None:
                pending.append((path, st))
            else:
                files.append((path, is_executable(st), digest))
        if pending:
            hashed = self._hasher.hash_many([(self._root + p, st.st_size) for p, st in pending])
            for (path, st), result in zip(pending, hashed, strict=True):
                if isinstance(result, OSError):
                    continue  # vanished or unreadable since the stat: see above
                self.stat_cache.record(path, st, result, observed_ns=observed_ns)
                files.append((path, is_executable(st), result))
        return outputs_digest(files, self.hash_name)

    def save(self) -> bool:
        """Persist the stat cache (when it changed); False when nothing was written."""
        if self._stat_cache_path is None:
            return False
        return self.stat_cache.save(self._fs, self._stat_cache_path)

    def close(self) -> None:
        """Stop the hashing pool."""
        self._hasher.close()
