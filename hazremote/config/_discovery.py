"""Finding the workspace root, the project directories and the bearing project.

The glob walk starts at the pattern's literal prefix, stops at the deepest level the pattern
can reach, never descends into ``.git``, ``.haz`` or ``node_modules``, and never follows
symbolic links.

Spec coverage:
* DISC-001 — :func:`find_workspace_root` (``--workspace-root`` is the CLI's: it skips this).
* DISC-003 — implicit mode: no ``projects`` and a root ``haz.yml`` → the root is the project.
* DISC-005 — explicit mode: literal entries need a ``haz.yml``; globs select those that have one.
* DISC-007 — :func:`bearing_project`: the deepest project whose directory contains the cwd.
Out of scope: parsing the files found (``_loader``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from hazremote.config._trace import Trace, path_signature, stat_signature
from hazremote.domain.model import Project, Workspace
from hazremote.domain.patterns import PathPattern, is_glob, parse_pattern, validate_relative_path
from hazremote.errors import Diagnostic, PatternError

if TYPE_CHECKING:  # the YAML side stays unimported when a snapshot serves the workspace
    from hazremote.config._schema import Checker
    from hazremote.config._settings import ProjectEntry

__all__ = [
    "PROJECT_FILE",
    "WORKSPACE_FILE",
    "FoundProject",
    "bearing_project",
    "find_workspace_root",
    "read_file",
    "select_projects",
]

PROJECT_FILE: Final = "haz.yml"
WORKSPACE_FILE: Final = ".haz/workspace.yml"
_SKIP_DIRS: Final = frozenset({".git", ".haz", "node_modules"})


def find_workspace_root(start: Path) -> Path | None:
    """DISC-001: the nearest ancestor of ``start`` (inclusive) with ``.haz/workspace.yml``."""
    start = start.absolute()
    for directory in (start, *start.parents):
        if (directory / WORKSPACE_FILE).is_file():
            return directory
    return None


def bearing_project(workspace: Workspace, cwd: Path) -> Project | None:
    """DISC-007: the project whose directory contains ``cwd`` (deepest wins), or ``None``."""
    rel = _relative(cwd.absolute(), workspace.root)
    if rel is None:
        rel = _relative(cwd.resolve(), workspace.root.resolve())
        if rel is None:
            return None
    best: Project | None = None
    for project in workspace.projects:
        d = project.dir
        if (d in ("", rel) or rel.startswith(d + "/")) and (best is None or len(d) > len(best.dir)):
            best = project
    return best


def _relative(path: Path, root: Path) -> str | None:
    try:
        rel = path.relative_to(root).as_posix()
    except ValueError:
        return None
    return "" if rel == "." else rel


def read_file(path: str, seen: Trace) -> bytes | OSError | None:
    """The bytes of ``path``; ``None`` when it does not exist; the error when unreadable.

    ``seen`` records the file's signature as read (from the open file), or ``None``.
    """
    try:
        with open(path, "rb") as handle:
            seen[path] = stat_signature(os.fstat(handle.fileno()))
            return handle.read()
    except (FileNotFoundError, NotADirectoryError):
        seen[path] = None
        return None
    except OSError as exc:
        seen[path] = None  # the load fails: nothing is kept
        return exc


@dataclass(frozen=True, slots=True, kw_only=True)
class FoundProject:
    """A project directory (``""`` for the root) and the bytes of its ``haz.yml``.

    ``entry`` is the ``projects:`` item that selected it first (``None`` in implicit mode).
    """

    dir: str
    data: bytes
    entry: ProjectEntry | None


def select_projects(
    root: Path, entries: list[ProjectEntry], checker: Checker, seen: Trace
) -> list[FoundProject]:
    """DISC-003/005: the project directories, in the order the entries select them.

    ``checker`` is the ``workspace.yml`` checker: bad entries and literal directories without
    a ``haz.yml`` are reported there, at the entry's key path and line. Every file probed and
    directory listed is recorded in ``seen``.
    """
    root_str = str(root)
    if not entries:
        data = read_file(f"{root_str}/{PROJECT_FILE}", seen)
        if isinstance(data, OSError):
            checker.diagnostics.append(
                Diagnostic(
                    file=PROJECT_FILE,
                    key_path="",
                    line=None,
                    message=f"cannot read: {data.strerror}",
                )
            )
            return []
        return [] if data is None else [FoundProject(dir="", data=data, entry=None)]

    found: dict[str, FoundProject] = {}
    walker = _DirWalker(root_str, seen)
    for entry in entries:
        problem = _entry_problem(entry.text)
        if problem is not None:
            checker.error_at_line(entry.key_path, entry.line, problem)
            continue
        if is_glob(entry.text):
            pattern = parse_pattern(entry.text, project_dir="")
            for directory in walker.matches(pattern):
                if directory in found:
                    continue
                data = read_file(f"{root_str}/{directory}/{PROJECT_FILE}", seen)
                if isinstance(data, OSError):
                    checker.error_at_line(
                        entry.key_path,
                        entry.line,
                        f"cannot read {directory}/{PROJECT_FILE}: {data.strerror}",
                    )
                elif data is not None:
                    found[directory] = FoundProject(dir=directory, data=data, entry=entry)
            continue
        directory = "" if entry.text == "." else entry.text
        if directory in found:
            continue
        file = f"{root_str}/{directory}/{PROJECT_FILE}" if directory else f"{root_str}/haz.yml"
        data = read_file(file, seen)
        if isinstance(data, OSError) or data is None:
            checker.error_at_line(entry.key_path, entry.line, _missing(root, entry.text, data))
            continue
        found[directory] = FoundProject(dir=directory, data=data, entry=entry)
    return list(found.values())


def _entry_problem(text: str) -> str | None:
    if text.startswith("!"):
        return f"{text!r}: '!' exclusions are not supported in projects; list what to include"
    problem = validate_relative_path(text)
    if problem is not None:
        return f"project directory {text!r} {problem}"
    if is_glob(text):
        try:
            parse_pattern(text, project_dir="")
        except PatternError as exc:
            return str(exc)
    return None


def _missing(root: Path, text: str, error: OSError | None) -> str:
    if isinstance(error, OSError):
        return f"cannot read {text}/{PROJECT_FILE}: {error.strerror}"
    directory = root if text == "." else root / text
    if not directory.is_dir():
        return f"project directory {text!r} does not exist"
    return f"project directory {text!r} has no {PROJECT_FILE}"


class _DirWalker:
    """Directory listings below the root, each read at most once per load."""

    __slots__ = ("_listings", "_root", "_seen")

    def __init__(self, root: str, seen: Trace) -> None:
        self._root = root
        self._listings: dict[str, list[str]] = {}
        self._seen = seen

    def _subdirs(self, rel: str) -> list[str]:
        listing = self._listings.get(rel)
        if listing is None:
            listing = []
            path = f"{self._root}/{rel}" if rel else self._root
            self._seen[path] = path_signature(path)  # before listing: a later change shows
            try:
                with os.scandir(path) as it:
                    for entry in it:
                        if entry.name not in _SKIP_DIRS and entry.is_dir(follow_symlinks=False):
                            listing.append(entry.name)
            except OSError:
                pass  # missing or unreadable: a glob may select nothing
            listing.sort()
            self._listings[rel] = listing
        return listing

    def matches(self, pattern: PathPattern) -> list[str]:
        """Workspace-relative directories (never the root) matched by ``pattern``."""
        body = pattern.absolute[1:]
        start = pattern.literal_prefix[1:]
        # '*', '?' and classes never match '/', so a match has at most as many segments as
        # the pattern has '/'-separated parts; only '**' is unbounded.
        max_depth = None if "**" in body else body.count("/") + 1
        out: list[str] = []
        stack = [(start, start.count("/") + 1 if start else 0)]
        while stack:
            rel, depth = stack.pop()
            if rel and pattern.matches("/" + rel):
                out.append(rel)
            if max_depth is not None and depth >= max_depth:
                continue
            prefix = f"{rel}/" if rel else ""
            stack.extend((prefix + name, depth + 1) for name in reversed(self._subdirs(rel)))
        return out
