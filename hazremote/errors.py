"""The project's error tree: every failure ``hazremote`` raises derives from :class:`HazError`.

A cache miss is never an exception; it is a value.

Spec coverage:
* CFG-040 — :class:`Diagnostic` names file, key path and line; :class:`ConfigError` holds all.
* DAG-011 — :class:`GraphError` collects every graph diagnostic.
* DAG-016, PATH-001..016 — a WARNING :class:`Diagnostic` is every configuration warning.
* EXEC-021 — each error knows the process exit code it maps to.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hazremote.domain.model import RefEntry, Workspace
    from hazremote.domain.refs import TaskId

__all__ = [
    "ConfigError",
    "Diagnostic",
    "GraphError",
    "HazError",
    "PartialLoad",
    "PatternError",
    "ReferenceError_",
    "Severity",
    "UsageError",
]

EXIT_CONFIG = 2


class HazError(Exception):
    """Root of every error ``hazremote`` raises on purpose."""

    exit_code: int = 1


class Severity(enum.Enum):
    """An error makes the configuration invalid (exit 2); a warning is shown and run past."""

    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True, kw_only=True)
class Diagnostic:
    """One problem found in the configuration (CFG-040), an error unless it says otherwise.

    Attributes:
        file: Workspace-relative path of the file (``.haz/workspace.yml``), or ``""`` when the
            problem is not tied to one file (a graph cycle).
        key_path: Dotted key path inside the file (``tasks.build.deps[1]``), or ``""``.
        line: 1-based line the YAML parser gave for the key, or ``None``.
        message: What is wrong, in a sentence.
        severity: :attr:`Severity.ERROR` (the load fails) or :attr:`Severity.WARNING`.
        tasks: The tasks it concerns, canonical order (``()`` when it concerns no task): a
            command shows the warnings of the tasks it works on.
    """

    file: str
    key_path: str
    line: int | None
    message: str
    severity: Severity = Severity.ERROR
    tasks: tuple[TaskId, ...] = ()

    @property
    def is_warning(self) -> bool:
        return self.severity is Severity.WARNING

    def render(self) -> str:
        where = self.file or "<workspace>"
        if self.line is not None:
            where += f":{self.line}"
        if self.key_path:
            where += f": {self.key_path}"
        return f"{where}: {self.message}"

    def sort_key(self) -> tuple[str, int, str, str]:
        return (self.file, self.line or 0, self.key_path, self.message)


@dataclass(frozen=True, slots=True, kw_only=True)
class PartialLoad:
    """What a load that found errors still parsed, so that the graph's reference checks can
    run on it and be reported in the same error (CFG-040, DAG-011).

    Attributes:
        workspace: The projects and overlays that loaded (tasks with errors left out).
        incomplete_projects: Projects that loaded, but whose file had errors: some of their
            tasks may be missing.
        lost_projects: Names that projects which failed to load would have had (their file
            did not parse, or gave no valid name).
        lost_unknown: A project failed to load and its name cannot be told.
        overlays_incomplete: An overlay file had errors: any project may lack tasks.
        orphan_refs: ``deps``/``weakDeps`` of tasks left out for other errors, with the task
            that wrote them; their references are checked too.
    """

    workspace: Workspace
    incomplete_projects: frozenset[str]
    lost_projects: frozenset[str]
    lost_unknown: bool
    overlays_incomplete: bool
    orphan_refs: tuple[tuple[TaskId, RefEntry], ...]


class ConfigError(HazError):
    """The workspace configuration is invalid; carries every diagnostic of the load.

    ``partial`` is what the load still parsed, when it is consistent enough to build a graph
    from (the loader sets it; :func:`hazremote.graph.partial_diagnostics` uses it).
    """

    exit_code = EXIT_CONFIG

    def __init__(
        self, diagnostics: Iterable[Diagnostic], *, partial: PartialLoad | None = None
    ) -> None:
        self.diagnostics: tuple[Diagnostic, ...] = tuple(diagnostics)
        self.partial = partial
        super().__init__(self.render())

    def render(self) -> str:
        lines = [d.render() for d in self.diagnostics]
        count = len(lines)
        header = f"{count} configuration error{'s' if count != 1 else ''}:"
        return "\n".join([header, *("  " + line for line in lines)])


class GraphError(ConfigError):
    """The task graph is invalid (DAG-011): cycles, collisions, bad references."""


class PatternError(HazError, ValueError):
    """A path or pattern violates PATH-001..016. Raised by the pure parsers."""

    exit_code = EXIT_CONFIG


class ReferenceError_(HazError, ValueError):
    """A task reference string violates REF-001..008 or resolves to nothing."""

    exit_code = EXIT_CONFIG


class UsageError(HazError):
    """The command line is wrong (EXEC-021: exit 2)."""

    exit_code = EXIT_CONFIG
