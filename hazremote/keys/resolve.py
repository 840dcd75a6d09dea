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
* PATH-001..016 (default inputs) — a task without an ``inputs`` key
  (:attr:`Task.default_inputs`) hashes its project's files: in a git work tree what git tracks
  or would track (one :class:`~hazremote.keys.worktree.WorkTree` listing per run, partitioned
  by project with bisection), outside one every file under the project directory (the
  memoised walk); never ``.haz/``, ``.git/``, other projects' directories nested below it,
  nor the task's own outputs. A listed file missing from disk (deleted, still in the index)
  is not an input. After a task of the run wrote outputs, the untracked files below those
  outputs are listed again before a default is resolved in a project they touch, so an
  untracked, not ignored output of a predecessor is an input of a dependant.
* PATH (warnings) — :meth:`InputResolver.unmatched` / :meth:`InputResolver.check_unmatched`:
  a positive input pattern that matches no file, or whose matches are all the task's own
  outputs, or a literal under ``.haz/``/``.git/``, as :class:`UnmatchedInput` (the caller
  decides which to print). ``!`` patterns are never reported.
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

import bisect
import enum
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
from hazremote.keys.worktree import WorkTree

__all__ = [
    "CONTROL_DIRS",
    "InputError",
    "InputResolver",
    "UnmatchedInput",
    "UnmatchedReason",
    "build_components",
    "effective_process_env",
    "resolve_env",
    "unmatched_warnings",
]

_CONTROL_PREFIXES = tuple(f"/{name}/" for name in sorted(CONTROL_DIRS))
#: PATH: a nested repository's control directory (or gitfile) is never a default input.
_NESTED_GIT = (("/**/.git", True), ("/**/.git/**", True))
_NO_DEPTH_LIMIT = 1 << 30
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


class UnmatchedReason(enum.Enum):
    """PATH: why an input pattern contributes no file (worded for the warning)."""

    NO_MATCH = "matches no file"
    OWN_OUTPUTS = "is wholly excluded by the task's own outputs"
    CONTROL_DIR = "lies under .haz/ or .git/, which never hold inputs"


@dataclass(frozen=True, slots=True, kw_only=True)
class UnmatchedInput:
    """PATH: a positive input pattern of ``task`` that contributes no file.

    Attributes:
        task: The task declaring it.
        pattern: The pattern as declared.
        reason: Why it contributes nothing.
        outputs: For :attr:`UnmatchedReason.OWN_OUTPUTS`, the own outputs overlapping it.
    """

    task: TaskId
    pattern: PathPattern
    reason: UnmatchedReason
    outputs: tuple[PathPattern, ...] = ()

    def message(self) -> str:
        """The warning: ``task lib:test: input 'build/x.o' is wholly excluded by …``."""
        text = f"task {self.task}: input '{self.pattern.text}' {self.reason.value}"
        if self.outputs:
            text += " (" + ", ".join(f"'{o.text}'" for o in self.outputs) + ")"
        return text


def unmatched_warnings(
    found: Iterable[UnmatchedInput],
    *,
    tasks: Mapping[TaskId, Task],
    producers: Mapping[TaskId, Sequence[TaskId]],
) -> list[str]:
    """PATH: the warnings worth printing for ``found``, once each, in the order given.

    A pattern that matches no file is not reported when an output of another task overlaps
    it (DAG-013 ``producers``): that task may write the file later (``haz check``) or the
    run may not include it; such inputs are announced by their producer edge instead.
    """
    seen: set[tuple[TaskId, str]] = set()
    out: list[str] = []
    for item in found:
        if (item.task, item.pattern.text) in seen:
            continue
        seen.add((item.task, item.pattern.text))
        if item.reason is UnmatchedReason.NO_MATCH and any(
            patterns_overlap(item.pattern, output)
            for producer in producers.get(item.task, ())
            if producer != item.task
            for output in tasks[producer].outputs
        ):
            continue
        out.append(item.message())
    return out


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
    # PATH default inputs: the work tree's files (workspace-absolute, sorted) once listed,
    # None outside git; `dirty` holds literal prefixes of outputs written since (sorted)
    tree_listed: bool = False
    tree: list[str] | None = None
    tree_known: set[str] = field(default_factory=set)
    dirty: list[str] = field(default_factory=list)
    # PATH warnings of each task's latest resolution
    findings: dict[TaskId, tuple[UnmatchedInput, ...]] = field(default_factory=dict)

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
        work_tree: Lists what git tracks or would track, for default inputs; None treats the
            workspace as outside any git work tree (every file).
    """

    def __init__(
        self,
        *,
        root: str,
        fs: Filesystem,
        stat_cache: StatCache,
        hasher: FileHasher,
        work_tree: WorkTree | None = None,
    ) -> None:
        if stat_cache.hash_name is not hasher.hash_name:
            raise ValueError("the stat cache and the hasher use different hash functions")
        self._root = root.rstrip("/")
        self._work_tree = work_tree
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

    def unmatched(self) -> tuple[UnmatchedInput, ...]:
        """PATH: input patterns that contributed no file to the latest resolution of each task
        resolved this run, in canonical task order."""
        findings = self._memo.findings
        return tuple(f for task in sorted(findings) for f in findings[task])

    def check_unmatched(self, tasks: Sequence[Task]) -> tuple[UnmatchedInput, ...]:
        """PATH: like :meth:`unmatched` for ``tasks``, matching against disk without hashing
        (``haz check``): a missing literal input counts as matching no file."""
        found: list[UnmatchedInput] = []
        with _gc_paused():
            for task in sorted(tasks, key=lambda t: t.id):
                found.extend(self._collect_patterns(task, None, {}))
        return tuple(found)

    def invalidate(self, patterns: Iterable[PathPattern]) -> None:
        """Forget what writes matching ``patterns`` (a task's outputs) may have changed."""
        memo = self._memo
        memo.tasks.clear()
        for pattern in patterns:
            prefix = pattern.literal_prefix
            memo.forget("" if prefix == "/" else prefix)
            if memo.tree is not None:  # new untracked files may lie below: list again there
                bisect.insort(memo.dirty, "" if prefix == "/" else prefix)
        # a symlink's target may lie under any of the prefixes: forget every followed symlink
        for link in list(memo.symlinks):
            memo.forget(link)

    def reset(self) -> None:
        """Forget everything memoised (start of a new run in a long-lived process)."""
        self._memo = _RunMemo(observed_ns=self._stat_cache.now_ns())

    # -- collection -----------------------------------------------------------------------------

    def _collect(self, task: Task, item: _TaskWork, pending: dict[str, FileStat]) -> None:
        findings = self._collect_patterns(task, item, pending)
        if findings:
            self._memo.findings[task.id] = findings
        else:
            self._memo.findings.pop(task.id, None)
        if task.default_inputs is not None:
            self._add_glob_matches(self._default_files(task), item, pending)

    def _collect_patterns(
        self, task: Task, item: _TaskWork | None, pending: dict[str, FileStat]
    ) -> tuple[UnmatchedInput, ...]:
        """Add the files of ``task``'s declared patterns to ``item`` and report the patterns
        contributing none; with ``item`` None only report (literals are probed, not hashed)."""
        positives = [p for p in task.inputs if not p.negated]
        excluders = [p for p in task.inputs if p.negated]
        excluders.extend(task.outputs)
        literals: list[PathPattern] = []
        findings: list[UnmatchedInput] = []
        for pattern in positives:
            relevant = tuple(
                (x.absolute, x.glob) for x in excluders if patterns_overlap(pattern, x)
            )
            if pattern.glob:
                matched = self._glob(pattern, relevant)
                if not matched:
                    finding = self._empty_glob(task, pattern, relevant)
                    if finding is not None:
                        findings.append(finding)
                elif item is not None:
                    self._add_glob_matches(matched, item, pending)
                continue
            path = pattern.absolute
            if _in_control_dir(path):
                findings.append(
                    UnmatchedInput(
                        task=task.id, pattern=pattern, reason=UnmatchedReason.CONTROL_DIR
                    )
                )
                continue
            if relevant and _exclusion_regex(relevant).fullmatch(path):
                outputs = tuple(o for o in task.outputs if o.matches(path))
                if outputs:  # otherwise a `!` input excluded it, as the user asked
                    findings.append(
                        UnmatchedInput(
                            task=task.id,
                            pattern=pattern,
                            reason=UnmatchedReason.OWN_OUTPUTS,
                            outputs=outputs,
                        )
                    )
                continue
            literals.append(pattern)
        for pattern in literals:
            if item is not None:
                self._add_literal(pattern.absolute, item, pending)
                continue
            try:
                self._literal_stat(pattern.absolute)
            except InputError:
                findings.append(
                    UnmatchedInput(task=task.id, pattern=pattern, reason=UnmatchedReason.NO_MATCH)
                )
        if len(findings) > 1:  # in declaration order
            findings.sort(key=lambda f: task.inputs.index(f.pattern))
        return tuple(findings)

    def _empty_glob(
        self, task: Task, pattern: PathPattern, relevant: tuple[tuple[str, bool], ...]
    ) -> UnmatchedInput | None:
        """Why the glob ``pattern`` matched nothing once ``relevant`` excluded, or None when
        a ``!`` input of the task excluded its files (what the user asked for)."""
        outputs = tuple(o for o in task.outputs if patterns_overlap(pattern, o))
        own = tuple((o.absolute, o.glob) for o in outputs)
        if own != relevant and self._glob(pattern, own):
            return None  # the `!` inputs excluded what the outputs left
        raw = self._glob(pattern, ()) if own else ()
        if raw:
            excluding = tuple(o for o in outputs if any(o.matches(p) for p in raw))
            return UnmatchedInput(
                task=task.id,
                pattern=pattern,
                reason=UnmatchedReason.OWN_OUTPUTS,
                outputs=excluding or outputs,
            )
        return UnmatchedInput(task=task.id, pattern=pattern, reason=UnmatchedReason.NO_MATCH)

    # -- default inputs (PATH) ------------------------------------------------------------------

    def _default_files(self, task: Task) -> tuple[str, ...]:
        """PATH: the candidate files of a task without an ``inputs`` key, memoised per run
        like a glob (forgotten when outputs are written below the project directory)."""
        project = task.default_inputs
        assert project is not None
        memo = self._memo
        base = project.absolute
        own = tuple(sorted({(o.absolute, o.glob) for o in task.outputs}))
        key = f"\0default\0{base}\0{own!r}"
        known = memo.globs.get(key)
        if known is not None:
            return known
        tree = self._tree(base)
        # As in _glob: match the part below the project directory, so one compiled regex
        # serves every project whose outputs are written the same way (`dist/**`).
        strip = len(base) if all(t.startswith(base + "/") for t, _ in own) else 0
        excluders = tuple((t[strip:], glob) for t, glob in own) + _NESTED_GIT
        if not base:
            excluders += tuple((f"/{name}/**", True) for name in sorted(CONTROL_DIRS))
        regex = _glob_regex(f"{base[strip:]}/**", excluders)
        out: list[str] = []
        if tree is None:
            prune = frozenset(f"/{n}" for n in project.nested)
            self._walk(
                base,
                1,
                max_depth=_NO_DEPTH_LIMIT,
                regex=regex,
                strip=strip,
                out=out,
                stack=[base],
                prune=prune,
            )
        else:
            match = regex.fullmatch
            candidates = [p for p in _project_slice(tree, base, project.nested) if match(p[strip:])]
            out = self._stat_listed(candidates)
        result = tuple(out)
        memo.globs[key] = result
        memo.globs_at.setdefault(base, []).append(key)
        if base:
            memo.register(base)
        return result

    def _tree(self, base: str) -> list[str] | None:
        """The sorted work-tree listing, None outside git; first brought up to date below
        ``base`` with the untracked files under outputs written since it was listed."""
        memo = self._memo
        if not memo.tree_listed:
            memo.tree_listed = True
            listed = None if self._work_tree is None else self._work_tree.list_files()
            if listed is not None:
                memo.tree = sorted("/" + p for p in listed)
                memo.tree_known = set(memo.tree)
            return memo.tree
        tree = memo.tree
        if tree is None or not memo.dirty:
            return tree
        stale = _touching(memo.dirty, base)
        if stale:
            assert self._work_tree is not None
            found = self._work_tree.untracked_under([p[1:] for p in stale if p] or [])
            if "" in stale:  # an output pattern at the workspace root: list everything
                found = self._work_tree.list_files() or ()
            known = memo.tree_known
            for rel in found:
                path = "/" + rel
                if path not in known:
                    known.add(path)
                    bisect.insort(tree, path)
            dropped = set(stale)
            memo.dirty = [p for p in memo.dirty if p not in dropped]
        return tree

    def _stat_listed(self, paths: list[str]) -> list[str]:
        """Stat listed files (one port call per directory; symlinks followed) and return
        those that are regular files or symlinks to one; a file gone from disk is none."""
        memo = self._memo
        inputs = memo.inputs
        stats = memo.stats
        out: list[str] = []
        by_dir: dict[str, list[str]] = {}
        for path in paths:
            if path in inputs:
                out.append(path)
            elif path in stats:
                known = stats[path]
                if known is not None and is_regular(known):
                    out.append(path)
            else:
                by_dir.setdefault(path[: path.rfind("/")], []).append(path)
        lookup = self._stat_cache.lookup
        for directory, listed in by_dir.items():
            names = [p[len(directory) + 1 :] for p in listed]
            found = self._fs.stat_entries(self._root + directory, names)
            for path, st in zip(listed, found, strict=True):
                memo.register(path)
                if st is None:
                    stats[path] = None  # deleted from disk, still in the index: no input
                    continue
                kind = st.st_mode & _FILE_TYPE_MASK
                if kind == stat_mod.S_IFLNK:
                    followed = self._followed_stat(path)
                    if followed is not None and is_regular(followed):
                        memo.symlinks.add(path)
                        out.append(path)
                    continue
                if kind != stat_mod.S_IFREG:
                    stats[path] = None
                    continue
                out.append(path)
                digest = lookup(path, st)
                if digest is None:
                    stats[path] = st
                else:
                    inputs[path] = InputFile(
                        path=path,
                        executable=bool(st.st_mode & 0o111),
                        digest=digest,
                        size=st.st_size,
                    )
        out.sort()
        return out

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
            known = InputFile(
                path=path, executable=is_executable(st), digest=digest, size=st.st_size
            )
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
        known = InputFile(path=path, executable=is_executable(st), digest=digest, size=st.st_size)
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
            memo.inputs[path] = InputFile(
                path=path, executable=is_executable(st), digest=digest, size=st.st_size
            )
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
            max_depth = (
                rest.count("/") + 1 if "**" not in rest and "{" not in rest else _NO_DEPTH_LIMIT
            )
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
        prune: frozenset[str] = frozenset(),
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
                prune=prune,
            )
            stack.pop()

        if descend:
            for name in dirs:
                path = prefix + name
                if path not in prune:
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
            elif (
                is_directory(st) and descend and path not in prune and not self._is_loop(st, stack)
            ):
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
                    path=path,
                    executable=bool(st.st_mode & 0o111),
                    digest=digest,
                    size=st.st_size,
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


def _project_slice(tree: list[str], base: str, nested: Sequence[str]) -> list[str]:
    """The paths of the sorted ``tree`` below ``base`` but not below a ``nested`` directory.

    The paths below a directory are one contiguous run of a sorted list (everything from
    ``dir + "/"`` up to ``dir + "0"``, ``"0"`` following ``"/"``), so this is a few bisections.
    """
    lo = bisect.bisect_left(tree, base + "/")
    hi = bisect.bisect_left(tree, base + "0") if base else len(tree)
    out: list[str] = []
    for directory in nested:  # sorted, outermost only: their runs are disjoint and in order
        cut_lo = bisect.bisect_left(tree, f"/{directory}/", lo, hi)
        cut_hi = bisect.bisect_left(tree, f"/{directory}0", cut_lo, hi)
        out.extend(tree[lo:cut_lo])
        lo = cut_hi
    out.extend(tree[lo:hi])
    return out


def _touching(dirty: list[str], base: str) -> list[str]:
    """The prefixes of the sorted ``dirty`` list that lie below ``base`` or above it."""
    if not base:
        return list(dirty)
    lo = bisect.bisect_left(dirty, base + "/")
    hi = bisect.bisect_left(dirty, base + "0", lo)
    found = dirty[lo:hi]
    ancestor = base
    while ancestor:
        index = bisect.bisect_left(dirty, ancestor)
        if index < len(dirty) and dirty[index] == ancestor:
            found.append(ancestor)
        ancestor = ancestor[: ancestor.rfind("/")]
    if dirty and dirty[0] == "":
        found.append("")
    return found
