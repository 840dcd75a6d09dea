"""The project's error tree (STYLE: one root error type).

Every infrastructure or user-input failure raised by ``hazremote`` derives from
:class:`HazError`. A cache miss is never an exception; it is a value.

Spec coverage:
* CFG-040 — :class:`Diagnostic` carries file, key path and line; :class:`ConfigError`
  carries *all* diagnostics of a load so they are reported together.
* DAG-011 — :class:`GraphError` collects every graph diagnostic.
* DAG-016, PATH — a :class:`Diagnostic` of :attr:`Severity.WARNING` is the one shape of every
  configuration warning (overlapping output patterns, inputs that match nothing …): it names
  the task(s) it concerns so a command can show those of the tasks it is about.
* EXEC-021 — each error knows the process exit code it maps to.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hazremote.domain.refs import TaskId

__all__ = [
    "ConfigError",
    "Diagnostic",
    "GraphError",
    "HazError",
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


class ConfigError(HazError):
    """The workspace configuration is invalid; carries every diagnostic of the load."""

    exit_code = EXIT_CONFIG

    def __init__(self, diagnostics: Iterable[Diagnostic]) -> None:
        self.diagnostics: tuple[Diagnostic, ...] = tuple(diagnostics)
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
