"""Task references.

Spec coverage:
* REF-001..008 — every reference form; :func:`parse_cli_target` adds the bare ``task``.
* DAG-007 — :class:`TaskId` and its canonical order.
Out of scope: resolution against a workspace (``hazremote.graph``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple

from hazremote.domain.names import name_problem
from hazremote.errors import ReferenceError_

__all__ = ["RefKind", "TaskId", "TaskRef", "parse_cli_target", "parse_ref", "parse_task_id"]


class TaskId(NamedTuple):
    """A node of the task graph (DAG-007); ordering is the canonical order.

    A named tuple rather than a dataclass: task ids are hashed and compared millions of times
    in a large run, and tuple hashing and ordering run in C.
    """

    project: str
    task: str

    def __str__(self) -> str:
        return f"{self.project}:{self.task}"


class RefKind(enum.Enum):
    SAME = "~"  # ~:task
    PROJECT = "project"  # proj:task
    ALL = "^"  # ^:task
    ALL_OTHERS = "^~"  # ^~:task
    TAG = "[tag]"  # [tag]:task
    TAG_OTHERS = "[tag]~"  # [tag]~:task


@dataclass(frozen=True, slots=True)
class TaskRef:
    """A parsed reference; ``str()`` prints the canonical spelling that parses back to it."""

    kind: RefKind
    task: str
    project: str | None = None
    tag: str | None = None

    def __str__(self) -> str:
        match self.kind:
            case RefKind.SAME:
                return f"~:{self.task}"
            case RefKind.PROJECT:
                return f"{self.project}:{self.task}"
            case RefKind.ALL:
                return f"^:{self.task}"
            case RefKind.ALL_OTHERS:
                return f"^~:{self.task}"
            case RefKind.TAG:
                return f"[{self.tag}]:{self.task}"
            case RefKind.TAG_OTHERS:
                return f"[{self.tag}]~:{self.task}"
        raise AssertionError(self.kind)  # pragma: no cover


def _check(part: str, what: str, text: str) -> str:
    problem = name_problem(part)
    if problem is not None:
        raise ReferenceError_(f"invalid task reference {text!r}: {what} {problem}")
    return part


def parse_ref(text: object) -> TaskRef:
    """Parse one of the six REF forms.

    Raises:
        ReferenceError_: naming the reference and what is wrong with it.
    """
    if not isinstance(text, str):
        raise ReferenceError_(f"a task reference must be a string, got {text!r}")
    scope, sep, task = text.rpartition(":")
    if not sep:
        raise ReferenceError_(
            f"invalid task reference {text!r}: write ~:{text} for a task of the same project, "
            f"or project:task, ^:task, ^~:task, [tag]:task, [tag]~:task"
        )
    _check(task, "task name", text)
    if scope == "~":
        return TaskRef(RefKind.SAME, task)
    if scope == "^":
        return TaskRef(RefKind.ALL, task)
    if scope == "^~":
        return TaskRef(RefKind.ALL_OTHERS, task)
    if scope.startswith("["):
        others = scope.endswith("]~")
        close = len(scope) - (2 if others else 1)
        if not scope.endswith("]~" if others else "]") or close < 1:
            raise ReferenceError_(f"invalid task reference {text!r}: unclosed '[tag]'")
        tag = _check(scope[1:close], "tag", text)
        return TaskRef(RefKind.TAG_OTHERS if others else RefKind.TAG, task, tag=tag)
    _check(scope, "project name", text)
    return TaskRef(RefKind.PROJECT, task, project=scope)


def parse_cli_target(text: str, *, has_bearing_project: bool) -> TaskRef:
    """A command-line target: a bare ``task`` is ``~:task`` inside a project, else ``^:task``."""
    if ":" not in text:
        _check(text, "task name", text)
        return TaskRef(RefKind.SAME if has_bearing_project else RefKind.ALL, text)
    return parse_ref(text)


def parse_task_id(text: str) -> TaskId:
    """Parse a concrete ``project:task`` id."""
    ref = parse_ref(text)
    if ref.kind is not RefKind.PROJECT or ref.project is None:
        raise ReferenceError_(f"expected a task id project:task, got {text!r}")
    return TaskId(ref.project, ref.task)
