"""Loading a workspace: ``workspace.yml``, every project's ``haz.yml`` and the overlays.

Loading only reads: it never creates, writes or locks anything in the workspace.

Spec coverage:
* CFG-040 — all diagnostics in one ConfigError, sorted, with what still loaded (``PartialLoad``).
* DISC-003, DISC-005 — via :mod:`hazremote.config._discovery`.
* DISC-006 — project names; the root defaults to ``root``; duplicates are one error.
* ID-001..003 — project names and tags.
* Configuration files (§1) — ``haz.yml`` and ``.haz/tasks/<overlay>.yml`` in file-name order.
Out of scope: overlay merge, reference resolution and every graph check (``hazremote.graph``).
"""

from __future__ import annotations

import gc
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Final

import yaml
from yaml.nodes import Node, SequenceNode

from hazremote.config._discovery import (
    PROJECT_FILE,
    WORKSPACE_FILE,
    FoundProject,
    read_file,
    select_projects,
)
from hazremote.config._schema import Checker, compose
from hazremote.config._settings import ProjectEntry, parse_workspace_file
from hazremote.config._tasks import parse_tasks
from hazremote.config._trace import Trace, path_signature
from hazremote.domain.model import Overlay, Project, RefEntry, TaskSpec, Workspace
from hazremote.domain.names import is_valid_name, name_problem, sanitize_name
from hazremote.domain.refs import TaskId
from hazremote.errors import ConfigError, Diagnostic, PartialLoad

__all__ = ["ROOT_PROJECT_NAME", "load_workspace"]

ROOT_PROJECT_NAME: Final = "root"
_OVERLAY_DIR: Final = ".haz/tasks"
_PROJECT_KEYS: Final = frozenset({"name", "tags", "tasks"})
_OVERLAY_KEYS: Final = frozenset({"tagsFilter", "tasks"})


def load_workspace(root: Path) -> Workspace:
    """Load and validate the workspace rooted at ``root``.

    Raises:
        ConfigError: carrying every diagnostic of the load (CFG-040).
    """
    return load_workspace_traced(root)[0]


def load_workspace_traced(root: Path) -> tuple[Workspace, Trace]:
    """:func:`load_workspace`, and the signature, as the load saw it, of every file it read
    or probed and every directory it listed, present or not (:mod:`._trace`): the workspace
    is a function of their contents alone, which :mod:`hazremote.config.snapshot` relies on."""
    seen: Trace = {}
    with _gc_paused():
        workspace = _load(root.resolve(), seen)
    return workspace, seen


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for the duration of a load.

    Composing allocates ~150 nodes per file and frees them right after (reference counting
    does that; node trees hold no cycles), yet the allocations trigger repeated collections
    that scan every live node: about a quarter of the load time of a 1,000-project workspace.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _load(root: Path, seen: Trace) -> Workspace:
    diagnostics: list[Diagnostic] = []
    ws_checker = Checker(WORKSPACE_FILE, diagnostics)
    data = read_file(str(root / WORKSPACE_FILE), seen)
    if data is None or isinstance(data, OSError):
        reason = "not found" if data is None else f"cannot be read: {data.strerror}"
        raise ConfigError(
            [Diagnostic(file=WORKSPACE_FILE, key_path="", line=None, message=f"{reason} in {root}")]
        )
    ok, node = _compose(ws_checker, data)
    settings, entries = parse_workspace_file(ws_checker, node if ok else None)
    if not ok:
        # Without a readable projects list, discovering projects would only add noise.
        raise ConfigError(diagnostics)

    projects: list[_Parsed] = []
    incomplete: set[str] = set()
    lost: set[str | None] = set()
    orphans: list[tuple[TaskId, RefEntry]] = []
    for found in select_projects(root, entries, ws_checker, seen):
        before = len(diagnostics)
        rejected: list[tuple[str, RefEntry]] = []
        parsed = _parse_project(found, diagnostics, rejected)
        if parsed is None:
            lost.add(_name_of_unloaded(found))
            continue
        projects.append(parsed)
        name = parsed.project.name
        if len(diagnostics) != before:
            incomplete.add(name)
        orphans += [(TaskId(name, task), entry) for task, entry in rejected]
    _check_unique_names(projects, diagnostics)
    before_overlays = len(diagnostics)
    overlays = _load_overlays(root, diagnostics, seen)

    workspace = Workspace(
        root=root,
        settings=settings,
        projects=tuple(sorted((p.project for p in projects), key=_by_name)),
        overlays=tuple(overlays),
    )
    if diagnostics:
        names = [p.project.name for p in projects]
        partial = None
        if len(set(names)) == len(names):  # a graph of projects sharing a name means nothing
            partial = PartialLoad(
                workspace=workspace,
                incomplete_projects=frozenset(incomplete),
                lost_projects=frozenset(name for name in lost if name is not None),
                lost_unknown=None in lost,
                overlays_incomplete=len(diagnostics) != before_overlays,
                orphan_refs=tuple(orphans),
            )
        raise ConfigError(sorted(diagnostics, key=Diagnostic.sort_key), partial=partial)
    return workspace


_NAME_LINE: Final = re.compile(rb"^name[ \t]*:(.*)$", re.MULTILINE)
_NAME_VALUE: Final = re.compile(rb"[ \t]*(['\"]?)([A-Za-z0-9_.-]+)\1[ \t]*(?:#.*)?")


def _name_of_unloaded(found: FoundProject) -> str | None:
    """The name a project whose ``haz.yml`` did not load would most likely have: a plain
    top-level ``name:`` line, else the name derived from its directory; ``None`` when that
    cannot be told (a ``name:`` that is not a plain word, a flow-style document)."""
    if found.data.lstrip().startswith(b"{"):
        return None
    lines = _NAME_LINE.findall(found.data)
    if lines:
        value = _NAME_VALUE.fullmatch(lines[-1].rstrip(b"\r"))
        return None if value is None else value.group(2).decode()
    if found.dir == "":
        return ROOT_PROJECT_NAME
    return sanitize_name(found.dir.rsplit("/", 1)[-1])


def _by_name(project: Project) -> str:
    return project.name


def _compose(checker: Checker, data: bytes) -> tuple[bool, Node | None]:
    """Compose a file; a syntax error becomes a diagnostic at the parser's line."""
    result = compose(data)
    if not isinstance(result, yaml.YAMLError):
        return True, result
    line = None
    message = str(result)
    if isinstance(result, yaml.MarkedYAMLError):
        mark = result.problem_mark or result.context_mark
        line = None if mark is None else mark.line + 1
        message = (result.problem or message).removeprefix("but ")
        if result.context:
            context_line = "" if result.context_mark is None else result.context_mark.line + 1
            message = f"{message} ({result.context}, line {context_line})"
    checker.error_at_line("", line, f"invalid YAML: {message}")
    return False, None


@dataclass(frozen=True, slots=True, kw_only=True)
class _Parsed:
    project: Project
    name_line: int | None  # line of an explicit name:, None when derived
    entry: ProjectEntry | None


def _parse_project(
    found: FoundProject, diagnostics: list[Diagnostic], rejected: list[tuple[str, RefEntry]]
) -> _Parsed | None:
    file = f"{found.dir}/{PROJECT_FILE}" if found.dir else PROJECT_FILE
    checker = Checker(file, diagnostics)
    ok, node = _compose(checker, found.data)
    if not ok:
        return None
    fields = {} if node is None else checker.fields(node, "", _PROJECT_KEYS, PROJECT_FILE)
    if fields is None:
        return None

    name: str | None
    name_line = None
    if "name" in fields:
        key_node, value_node = fields["name"]
        name_line = key_node.start_mark.line + 1
        name = checker.text(value_node, "name", "the project name")
        problem = None if name is None else name_problem(name)
        if problem is not None:
            checker.error("name", value_node, f"invalid project name: {problem}")
            name = None
    elif found.dir == "":
        name = ROOT_PROJECT_NAME
    else:
        basename = found.dir.rsplit("/", 1)[-1]
        name = sanitize_name(basename)
        if not is_valid_name(name):
            checker.error_at_line(
                "name",
                None,
                f"the directory name {basename!r} gives no valid project name; "
                f"set name: in {PROJECT_FILE}",
            )
            name = None

    tags: list[str] = []
    if "tags" in fields:
        for tag, item, index in checker.texts(fields["tags"][1], "tags", "tags"):
            problem = name_problem(tag)
            if problem is not None:
                checker.error(f"tags[{index}]", item, f"invalid tag: {problem}")
            elif tag not in tags:
                tags.append(tag)
    tasks: dict[str, TaskSpec] = {}
    if "tasks" in fields:
        tasks = parse_tasks(checker, fields["tasks"][1], "tasks", rejected=rejected)
    if name is None:
        return None
    project = Project(
        name=name,
        dir=found.dir,
        tags=tuple(tags),
        tasks=MappingProxyType(tasks),
        file=file,
    )
    return _Parsed(project=project, name_line=name_line, entry=found.entry)


def _check_unique_names(projects: list[_Parsed], diagnostics: list[Diagnostic]) -> None:
    """DISC-006: one error per name used by several projects, naming every directory."""
    by_name: dict[str, list[_Parsed]] = {}
    for parsed in projects:
        by_name.setdefault(parsed.project.name, []).append(parsed)
    for name, group in by_name.items():
        if len(group) < 2:
            continue
        group.sort(key=lambda p: p.project.dir)
        dirs = " and ".join(repr(p.project.dir or ".") for p in group)
        message = (
            f"project name {name!r} is used by the projects in {dirs}; "
            f"project names must be unique: set a distinct name: in one of their {PROJECT_FILE}"
        )
        # Point at what gave the name: an explicit name: if any, else the projects: entry.
        named = [p for p in group if p.name_line is not None]
        target = named[-1] if named else group[-1]
        where: tuple[str, str, int | None]
        if target.name_line is not None:
            where = (target.project.file, "name", target.name_line)
        elif target.entry is not None:
            where = (WORKSPACE_FILE, target.entry.key_path, target.entry.line)
        else:  # pragma: no cover - implicit mode has a single project
            where = (target.project.file, "", None)
        diagnostics.append(
            Diagnostic(file=where[0], key_path=where[1], line=where[2], message=message)
        )


def _load_overlays(root: Path, diagnostics: list[Diagnostic], seen: Trace) -> list[Overlay]:
    directory = str(root / _OVERLAY_DIR)
    seen[directory] = path_signature(directory)  # before listing: a later change shows
    try:
        with os.scandir(directory) as it:
            entries = [(entry.name, entry.is_file()) for entry in it]
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        diagnostics.append(
            Diagnostic(
                file=_OVERLAY_DIR, key_path="", line=None, message=f"cannot list: {exc.strerror}"
            )
        )
        return []
    names = sorted(name for name, is_file in entries if is_file)
    for name, is_file in entries:
        if not is_file and name.endswith((".yml", ".yaml")):
            # Skipped today (a dangling link, a directory); a snapshot must notice the day
            # it becomes a file.
            seen[f"{directory}/{name}"] = path_signature(f"{directory}/{name}")
    overlays: list[Overlay] = []
    for file_name in names:
        file = f"{_OVERLAY_DIR}/{file_name}"
        if file_name.endswith(".yaml"):
            diagnostics.append(
                Diagnostic(
                    file=file,
                    key_path="",
                    line=None,
                    message=f"overlay files end in .yml; rename it to {file_name[:-5]}.yml",
                )
            )
            continue
        if not file_name.endswith(".yml"):
            continue
        overlay = _parse_overlay(root, file_name, file, diagnostics, seen)
        if overlay is not None:
            overlays.append(overlay)
    return overlays


def _parse_overlay(
    root: Path, file_name: str, file: str, diagnostics: list[Diagnostic], seen: Trace
) -> Overlay | None:
    checker = Checker(file, diagnostics)
    data = read_file(str(root / file), seen)
    if data is None or isinstance(data, OSError):
        reason = "vanished" if data is None else data.strerror
        checker.error_at_line("", None, f"cannot read: {reason}")
        return None
    ok, node = _compose(checker, data)
    if not ok:
        return None
    if node is None:
        checker.error_at_line(
            "tagsFilter", None, "an overlay needs tagsFilter: (a non-empty list of tags)"
        )
        return None
    fields = checker.fields(node, "", _OVERLAY_KEYS, "an overlay file")
    if fields is None:
        return None
    tags: list[str] = []
    if "tagsFilter" not in fields:
        checker.error("tagsFilter", node, "an overlay needs tagsFilter: (a non-empty list of tags)")
    else:
        filter_node = fields["tagsFilter"][1]
        items = checker.texts(filter_node, "tagsFilter", "tagsFilter")
        for tag, item, index in items:
            problem = name_problem(tag)
            if problem is not None:
                checker.error(f"tagsFilter[{index}]", item, f"invalid tag: {problem}")
            elif tag not in tags:
                tags.append(tag)
        if isinstance(filter_node, SequenceNode) and not filter_node.value:
            checker.error("tagsFilter", filter_node, "tagsFilter must list at least one tag")
    tasks: dict[str, TaskSpec] = {}
    if "tasks" in fields:
        tasks = parse_tasks(checker, fields["tasks"][1], "tasks")
    if not tags:
        return None
    return Overlay(
        name=file_name[:-4],
        file=file,
        tags_filter=tuple(tags),
        tasks=MappingProxyType(tasks),
    )
