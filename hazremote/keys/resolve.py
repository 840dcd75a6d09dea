"""Input resolution: a task's patterns, the workspace on disk and the host env → key components.

Spec coverage:
* CACHE-006 — input files: every file matched by the task's input patterns, as
  workspace-absolute paths, sorted by path and de-duplicated, each with its executable bit
  (any ``x`` bit of the followed mode) and content digest. A literal input that is missing, a
  directory, a dangling symlink or not a regular file raises :class:`InputError` naming the
  path (the executor fails the task, CACHE-006/EXEC-021). A literal symlink to a regular file
  is fine. A glob matching nothing contributes nothing. A symlink contributes its own path and
  its target's bytes.
* PATH-001..016 — globs walk the tree from the pattern's literal prefix only; ``!`` patterns
  exclude what they match; nothing under the workspace root's ``.haz/`` or ``.git/`` is an
  input (globs never descend there; a literal there is dropped); files matched by the task's
  own output patterns are never inputs (literal or glob).
* CACHE-008 — :func:`resolve_env`: ``from_host`` names with their host value or the unset
  marker, ``override`` values shadowing ``from_host`` entries, sorted by name, ``pass_through``
  absent. EXEC-008 — :func:`effective_process_env`.
* CACHE-009 — :func:`build_components`: the working directory (the project dir, ``""`` for
  the root) and the sorted, de-duplicated workspace-absolute output patterns.
* CACHE-007 — predecessors are sorted by task id here; their stream digests come from the
  executor.

Decisions where the spec is silent (see the report in ``docs/decisions.md``): globs follow
symlinked directories, guarded against loops (a directory whose device and inode is already on
the walk's path is not entered again); a glob meeting a dangling symlink, a FIFO, socket or
device skips it; an unreadable directory met by a glob is an :class:`InputError`.

Decisions (continued): a root-level entry named ``.haz`` or ``.git`` is skipped whatever its
kind (a linked worktree's ``.git`` is a file naming a host path); a literal input under them
is dropped, not an error; an output pattern listed twice is framed once.

Per-run memoisation: a run derives keys for many tasks whose patterns share directories and
files, so each directory is listed once, each file stat-ed once (one port call per directory)
and looked up in the stat cache once, and each (glob, exclusions) pair is walked once; a glob
and the task's exclusions (``!`` inputs, own outputs) form one regular expression, one match
per file. Tasks of the same run write outputs, so :meth:`InputResolver.invalidate` forgets
everything a set of output patterns could have changed (the subtree under each pattern's
literal prefix, listings and globs of its ancestors, and every symlink followed this run,
whose target may be anywhere). Files reached through a symlinked *ancestor* of a literal input
are not tracked for in-run invalidation (the stat cache still validates them in the next run).

Out of scope: framing (``hazremote.keys.framing``), streaming bytes (``hazremote.keys.hashing``),
deciding when bytes must be re-read (``hazremote.keys.statcache``).
"""

from __future__ import annotations

import gc
import re
import stat as stat_mod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache

from hazremote.domain.model import EnvSpec, Task
from hazremote.domain.patterns import CONTROL_DIRS, PathPattern, compile_glob, patterns_overlap
from hazremote.domain.refs import TaskId
from hazremote.errors import HazError
from hazremote.keys.components import (
    EnvEntry,
    EnvSource,
    InputFile,
    KeyComponents,
    PredecessorStreams,
)
from hazremote.keys.fs import (
    DirListing,
    FileStat,
    Filesystem,
    is_directory,
    is_executable,
    is_regular,
    is_symlink,
)
from hazremote.keys.hashing import FileHasher
from hazremote.keys.statcache import StatCache

__all__ = [
    "CONTROL_DIRS",
    "InputError",
    "InputResolver",
    "build_components",
    "effective_process_env",
    "resolve_env",
]

_CONTROL_PREFIXES = tuple(f"/{name}/" for name in sorted(CONTROL_DIRS))
_FILE_TYPE_MASK = 0o170000  # stat.S_IFMT, inlined on the hot path


class InputError(HazError):
    """A key error: an input cannot be resolved (CACHE-006). The task fails, exit 1.

    Attributes:
        path: The workspace-absolute path concerned.
        reason: What is wrong with it, as a phrase ("does not exist").
    """

    exit_code = 1

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"input {path} {reason}")


# --- environment (CACHE-008, EXEC-008) ----------------------------------------------------------


def resolve_env(spec: EnvSpec, host_env: Mapping[str, str]) -> tuple[EnvEntry, ...]:
    """CACHE-008: the hashed environment entries of a task, sorted by name.

    ``override`` shadows a ``from_host`` entry of the same name; ``pass_through`` names are not
    hashed (a name listed in both ``from_host`` and ``pass_through`` is hashed).
    """
    entries: dict[str, EnvEntry] = {}
    for name in spec.from_host:
        value = host_env.get(name)
        if value is None:
            entries[name] = EnvEntry(name=name, source=EnvSource.UNSET, value=None)
        else:
            entries[name] = EnvEntry(name=name, source=EnvSource.SET, value=value)
    for name, value in spec.override.items():
        entries[name] = EnvEntry(name=name, source=EnvSource.OVERRIDE, value=value)
    return tuple(entries[name] for name in sorted(entries))


def effective_process_env(spec: EnvSpec, host_env: Mapping[str, str]) -> dict[str, str]:
    """EXEC-008: exactly the ``pass_through`` and ``from_host`` values present on the host, plus
    the overrides (which win), and nothing else."""
    env: dict[str, str] = {}
    for name in (*spec.pass_through, *spec.from_host):
        value = host_env.get(name)
        if value is not None:
            env[name] = value
    env.update(spec.override)
    return env


# --- assembling components (CACHE-004..009) -----------------------------------------------------


def build_components(
    task: Task,
    *,
    inputs: tuple[InputFile, ...],
    predecessors: Iterable[PredecessorStreams] = (),
    env: tuple[EnvEntry, ...] = (),
) -> KeyComponents:
    """The :class:`KeyComponents` of ``task`` from already-resolved parts.

    ``inputs`` and ``env`` must already be sorted (as :class:`InputResolver` and
    :func:`resolve_env` return them); predecessors are sorted by task id and de-duplicated
    here; outputs are the task's workspace-absolute output patterns, sorted, de-duplicated.
    """
    by_task: dict[TaskId, PredecessorStreams] = {p.task: p for p in predecessors}
    return KeyComponents(
        action=task.action,
        inputs=inputs,
        predecessors=tuple(by_task[t] for t in sorted(by_task)),
        env=env,
        cwd=task.project_dir,
        outputs=tuple(sorted({p.absolute for p in task.outputs})),
    )


# --- input resolution (CACHE-006, PATH) ---------------------------------------------------------


@lru_cache(maxsize=4096)
def _exclusion_regex(excluders: tuple[tuple[str, bool], ...]) -> re.Pattern[str]:
    """Several ``(absolute, glob)`` exclusion patterns as one regex (cached: tasks repeat
    them), so a path costs one ``fullmatch`` however many patterns exclude."""
    parts = [compile_glob(text).pattern if glob else re.escape(text) for text, glob in excluders]
    return re.compile("|".join(f"(?:{part})" for part in parts))


@lru_cache(maxsize=4096)
def _glob_regex(absolute: str, excluders: tuple[tuple[str, bool], ...]) -> re.Pattern[str]:
    """The glob ``absolute`` minus ``excluders`` as one regex (one ``fullmatch`` per file)."""
    positive = compile_glob(absolute)
    if not excluders:
        return positive
    negative = _exclusion_regex(excluders).pattern
    return re.compile(f"(?!(?:{negative})\\Z)(?:{positive.pattern})")


def _in_control_dir(path: str) -> bool:
    return path.startswith(_CONTROL_PREFIXES) or path[1:] in CONTROL_DIRS


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector during a bulk resolution.

    Resolution allocates a few objects per input file (50,000 files: ~250,000 objects) and
    creates no reference cycles, yet the growing heap triggers full collections that
    re-traverse it: measured ~15 % of a warm re-key. Nothing cyclic is left for later.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@dataclass(slots=True)
class _RunMemo:
    """What one run has learnt about the workspace; see :meth:`InputResolver.invalidate`."""

    # clock reading taken before any stat below: the stat cache's insert rule bound
    observed_ns: int
    listings: dict[str, DirListing | None] = field(default_factory=dict)
    stats: dict[str, FileStat | None] = field(default_factory=dict)  # followed stats
    inputs: dict[str, InputFile] = field(default_factory=dict)
    globs: dict[str, tuple[str, ...]] = field(default_factory=dict)
    globs_at: dict[str, list[str]] = field(default_factory=dict)  # literal prefix → globs
    symlinks: set[str] = field(default_factory=set)  # followed this run
    # resolved tasks; cleared by every invalidation (recomputing from the memo is cheap)
    tasks: dict[TaskId, tuple[InputFile, ...]] = field(default_factory=dict)
    # a tree index of every path above, so a subtree can be forgotten in time proportional
    # to its size (a flat scan per finished task would cost O(tasks × files) per run)
    children: dict[str, set[str]] = field(default_factory=dict)

    def register(self, path: str) -> None:
        children = self.children
        while path:
            parent = path[: path.rfind("/")]
            kids = children.get(parent)
            if kids is not None:
                kids.add(path)
                return
            children[parent] = {path}
            path = parent

    def forget(self, prefix: str) -> None:
        """Forget the subtree at ``prefix`` and what its ancestors know of it."""
        ancestor = prefix
        while ancestor:
            ancestor = ancestor[: ancestor.rfind("/")]
            self.listings.pop(ancestor, None)
            for glob in self.globs_at.pop(ancestor, ()):
                self.globs.pop(glob, None)
        stack = [prefix]
        while stack:
            path = stack.pop()
            self.listings.pop(path, None)
            self.stats.pop(path, None)
            self.inputs.pop(path, None)
            self.symlinks.discard(path)
            for glob in self.globs_at.pop(path, ()):
                self.globs.pop(glob, None)
            stack.extend(self.children.pop(path, ()))


@dataclass(slots=True)
class _TaskWork:
    files: dict[str, InputFile]
    waiting: list[str]  # paths whose digest is being computed in this batch
    error: InputError | None = None


class InputResolver:
    """Resolves the input files of tasks against one workspace, memoising per run.

    Not thread-safe (the executor derives keys from its scheduling thread); hashing runs in the
    :class:`FileHasher`'s pool.

    Args:
        root: Host path of the workspace root. Keys never depend on it (location independence).
        fs: The file-system port.
        stat_cache: Digests of unchanged files.
        hasher: Hashes the files the stat cache cannot vouch for.
    """

    def __init__(
        self, *, root: str, fs: Filesystem, stat_cache: StatCache, hasher: FileHasher
    ) -> None:
        if stat_cache.hash_name is not hasher.hash_name:
            raise ValueError("the stat cache and the hasher use different hash functions")
        self._root = root.rstrip("/")
        self._fs = fs
        self._stat_cache = stat_cache
        self._hasher = hasher
        self._memo = _RunMemo(observed_ns=stat_cache.now_ns())

    # -- public ---------------------------------------------------------------------------------

    def resolve(self, task: Task) -> tuple[InputFile, ...]:
        """CACHE-006: the sorted, de-duplicated input files of ``task``.

        Raises:
            InputError: naming the offending path.
        """
        result = self.resolve_many((task,))[task.id]
        if isinstance(result, InputError):
            raise result
        return result

    def resolve_many(
        self, tasks: Sequence[Task]
    ) -> dict[TaskId, tuple[InputFile, ...] | InputError]:
        """Resolve several tasks at once, hashing all their unknown files in one parallel batch.

        A task whose inputs cannot be resolved maps to its :class:`InputError`.
        """
        with _gc_paused():
            return self._resolve_many(tasks)

    def _resolve_many(
        self, tasks: Sequence[Task]
    ) -> dict[TaskId, tuple[InputFile, ...] | InputError]:
        work: dict[TaskId, _TaskWork] = {}
        pending: dict[str, FileStat] = {}
        done = self._memo.tasks
        for task in tasks:
            if task.id in done:
                continue
            item = _TaskWork(files={}, waiting=[])
            work[task.id] = item
            try:
                self._collect(task, item, pending)
            except InputError as exc:
                item.error = exc
        failures = self._hash_pending(pending, self._memo.observed_ns)
        results: dict[TaskId, tuple[InputFile, ...] | InputError] = {
            task.id: done[task.id] for task in tasks if task.id in done
        }
        inputs = self._memo.inputs
        for task_id, item in work.items():
            if item.error is None:
                for path in item.waiting:
                    failure = failures.get(path)
                    if failure is not None:
                        item.error = failure
                        break
                    item.files[path] = inputs[path]
            if item.error is not None:
                results[task_id] = item.error
            else:
                files = item.files
                done[task_id] = results[task_id] = tuple(files[p] for p in sorted(files))
        return results

    def invalidate(self, patterns: Iterable[PathPattern]) -> None:
        """Forget what writes matching ``patterns`` (a task's outputs) may have changed."""
        memo = self._memo
        memo.tasks.clear()
        for pattern in patterns:
            prefix = pattern.literal_prefix
            memo.forget("" if prefix == "/" else prefix)
        # a symlink's target may lie under any of the prefixes: forget every followed symlink
        for link in list(memo.symlinks):
            memo.forget(link)

    def reset(self) -> None:
        """Forget everything memoised (start of a new run in a long-lived process)."""
        self._memo = _RunMemo(observed_ns=self._stat_cache.now_ns())

    # -- collection -----------------------------------------------------------------------------

    def _collect(self, task: Task, item: _TaskWork, pending: dict[str, FileStat]) -> None:
        positives = [p for p in task.inputs if not p.negated]
        excluders = [p for p in task.inputs if p.negated]
        excluders.extend(task.outputs)
        literal_paths: list[str] = []
        for pattern in positives:
            relevant = tuple(
                (x.absolute, x.glob) for x in excluders if patterns_overlap(pattern, x)
            )
            if pattern.glob:
                self._add_glob_matches(self._glob(pattern, relevant), item, pending)
                continue
            path = pattern.absolute
            if _in_control_dir(path) or (relevant and _exclusion_regex(relevant).fullmatch(path)):
                continue
            literal_paths.append(path)
        for path in literal_paths:
            self._add_literal(path, item, pending)

    def _add_glob_matches(
        self, matched: Iterable[str], item: _TaskWork, pending: dict[str, FileStat]
    ) -> None:
        memo = self._memo
        inputs = memo.inputs
        stats = memo.stats
        files = item.files
        for path in matched:
            known = inputs.get(path)  # most files: resolved during the walk
            if known is not None:
                files[path] = known
                continue
            if path in pending:
                item.waiting.append(path)
                continue
            st = stats.get(path)  # stat-ed (symlinks: followed) during the walk
            if st is None:  # forgotten since the walk
                try:
                    st = self._fs.stat(self._root + path)
                except OSError:
                    continue  # vanished since it was listed: not an input any more
                if not is_regular(st):
                    continue
                memo.register(path)
            digest = self._stat_cache.lookup(path, st)
            if digest is None:
                pending[path] = st
                item.waiting.append(path)
                continue
            known = InputFile(path=path, executable=is_executable(st), digest=digest)
            inputs[path] = known
            files[path] = known

    def _add_literal(self, path: str, item: _TaskWork, pending: dict[str, FileStat]) -> None:
        memo = self._memo
        known = memo.inputs.get(path)
        if known is not None:
            item.files[path] = known
            return
        if path in pending:
            item.waiting.append(path)
            return
        st = self._literal_stat(path)
        digest = self._stat_cache.lookup(path, st)
        if digest is None:
            pending[path] = st
            item.waiting.append(path)
            return
        known = InputFile(path=path, executable=is_executable(st), digest=digest)
        memo.inputs[path] = known
        memo.register(path)
        item.files[path] = known

    def _literal_stat(self, path: str) -> FileStat:
        """CACHE-006: the followed stat of a literal input, or the key error naming it."""
        host = self._root + path
        try:
            st = self._fs.lstat(host)
        except (FileNotFoundError, NotADirectoryError):
            raise InputError(path, "does not exist") from None
        except OSError as exc:
            raise InputError(path, f"cannot be read: {exc.strerror or exc}") from None
        if is_symlink(st):
            try:
                st = self._fs.stat(host)
            except (FileNotFoundError, NotADirectoryError):
                raise InputError(path, "is a dangling symlink") from None
            except OSError as exc:
                raise InputError(
                    path, f"is a symlink that cannot be followed: {exc.strerror or exc}"
                ) from None
            self._memo.symlinks.add(path)
            self._memo.register(path)
            if is_directory(st):
                raise InputError(path, "is a symlink to a directory, not a file")
        if is_directory(st):
            raise InputError(path, "is a directory, not a file")
        if not is_regular(st):
            raise InputError(path, "is not a regular file")
        return st

    def _hash_pending(
        self, pending: dict[str, FileStat], observed_ns: int
    ) -> dict[str, InputError]:
        if not pending:
            return {}
        paths = list(pending)
        root = self._root
        digests = self._hasher.hash_many([(root + p, pending[p].st_size) for p in paths])
        memo = self._memo
        record = self._stat_cache.record
        failures: dict[str, InputError] = {}
        for path, digest in zip(paths, digests, strict=True):
            if isinstance(digest, OSError):
                reason = digest.strerror or str(digest)
                failures[path] = InputError(path, f"cannot be read: {reason}")
                continue
            st = pending[path]
            record(path, st, digest, observed_ns=observed_ns)
            memo.inputs[path] = InputFile(path=path, executable=is_executable(st), digest=digest)
            memo.register(path)
        return failures

    # -- globs ----------------------------------------------------------------------------------

    def _glob(
        self, pattern: PathPattern, excluders: tuple[tuple[str, bool], ...]
    ) -> tuple[str, ...]:
        """Files (or symlinks to files) matched by the glob and by none of ``excluders``.

        Memoised per run by the combined regular expression, so tasks sharing a pattern and its
        exclusions walk once.
        """
        memo = self._memo
        prefix = pattern.literal_prefix
        start = "" if prefix == "/" else prefix
        # Every walked path starts with `start/`, so the regex matches the rest only: the same
        # relative glob in a thousand projects then compiles once, not a thousand times.
        strip = len(start) if all(t.startswith(start + "/") for t, _ in excluders) else 0
        regex = _glob_regex(
            pattern.absolute[strip:], tuple((t[strip:], glob) for t, glob in excluders)
        )
        key = f"{start[:strip]}\0{regex.pattern}"
        known = memo.globs.get(key)
        if known is not None:
            return known
        out: list[str] = []
        if not _in_control_dir(start):
            rest = pattern.absolute[len(start) + 1 :]
            # without "**" or alternations a match lies at a fixed depth below the prefix
            max_depth = rest.count("/") + 1 if "**" not in rest and "{" not in rest else 1 << 30
            self._walk(
                start, 1, max_depth=max_depth, regex=regex, strip=strip, out=out, stack=[start]
            )
        result = tuple(out)
        memo.globs[key] = result
        memo.globs_at.setdefault(start, []).append(key)
        if start:
            memo.register(start)
        return result

    def _walk(
        self,
        directory: str,
        depth: int,
        *,
        max_depth: int,
        regex: re.Pattern[str],
        strip: int,
        out: list[str],
        stack: list[str],
    ) -> None:
        listing = self._listing(directory)
        if listing is None:
            return
        files, dirs, links, _others = listing
        memo = self._memo
        match = regex.fullmatch
        descend = depth < max_depth
        inputs = memo.inputs
        stats = memo.stats
        unknown: list[str] = []  # matched regular files this run has not stat-ed yet
        unknown_paths: list[str] = []
        prefix = directory + "/"
        for name in files:
            path = prefix + name
            if match(path[strip:]):
                if path in inputs or path in stats:
                    out.append(path)
                else:
                    unknown.append(name)
                    unknown_paths.append(path)

        def enter(path: str) -> None:
            stack.append(path)
            self._walk(
                path,
                depth + 1,
                max_depth=max_depth,
                regex=regex,
                strip=strip,
                out=out,
                stack=stack,
            )
            stack.pop()

        if descend:
            for name in dirs:
                path = prefix + name
                enter(path)
        for name in links:
            path = prefix + name
            st = self._followed_stat(path)
            if st is None:
                continue  # dangling: contributes nothing to a glob
            memo.symlinks.add(path)
            if is_regular(st):
                if match(path[strip:]):
                    out.append(path)
            elif is_directory(st) and descend and not self._is_loop(st, stack):
                enter(path)
        if unknown:
            self._stat_new_files(directory, unknown, unknown_paths, out)

    def _stat_new_files(
        self, directory: str, names: list[str], paths: list[str], out: list[str]
    ) -> None:
        """Stat files found by a walk (one port call per directory) and resolve from the stat
        cache those it vouches for; the rest wait in ``stats`` to be hashed."""
        memo = self._memo
        inputs = memo.inputs
        stats = memo.stats
        lookup = self._stat_cache.lookup
        kids = memo.children.setdefault(directory, set())  # indexed for forget()
        found = self._fs.stat_entries(self._root + directory, names)
        for path, st in zip(paths, found, strict=True):
            if st is None or st.st_mode & _FILE_TYPE_MASK != stat_mod.S_IFREG:
                continue  # gone or replaced since the listing
            kids.add(path)
            out.append(path)
            digest = lookup(path, st)
            if digest is None:
                stats[path] = st
            else:
                inputs[path] = InputFile(
                    path=path, executable=bool(st.st_mode & 0o111), digest=digest
                )

    def _is_loop(self, st: FileStat, stack: list[str]) -> bool:
        for ancestor in stack:
            seen = self._followed_stat(ancestor)
            if seen is not None and seen.st_ino == st.st_ino and seen.st_dev == st.st_dev:
                return True
        return False

    def _followed_stat(self, path: str) -> FileStat | None:
        stats = self._memo.stats
        if path in stats:
            return stats[path]
        try:
            st: FileStat | None = self._fs.stat(self._root + path)
        except OSError:
            st = None
        stats[path] = st
        if path:
            self._memo.register(path)
        return st

    def _listing(self, directory: str) -> DirListing | None:
        listings = self._memo.listings
        if directory in listings:
            return listings[directory]
        try:
            listing = self._fs.list_dir(self._root + directory)
        except (FileNotFoundError, NotADirectoryError):
            listings[directory] = None
            return None
        except OSError as exc:
            raise InputError(
                directory or "/", f"is a directory that cannot be listed: {exc.strerror or exc}"
            ) from None
        if directory == "":
            # PATH: never an input, whatever its kind (a linked worktree's .git is a file)
            listing = DirListing(
                *(tuple(n for n in names if n not in CONTROL_DIRS) for names in listing)
            )
        listings[directory] = listing
        if directory:
            self._memo.register(directory)
        return listing
