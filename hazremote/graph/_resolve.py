"""Resolution of task references against the tasks of a workspace.

Spec coverage:
* REF-001..008 — every form, from a bearing project; a miss is explained with "did you mean".
Out of scope: parsing reference text (``hazremote.domain.refs``) and turning an empty result
into a diagnostic or an exception (the callers decide which).
"""

from __future__ import annotations

import difflib
from bisect import bisect_left
from collections.abc import Iterable, Mapping

from hazremote.domain.refs import RefKind, TaskId, TaskRef

__all__ = ["RefIndex"]


class RefIndex:
    """Task name → projects and tag → projects, so a reference costs O(matches).

    Args:
        task_ids: Every task of the graph, in canonical order.
        tags: Project name → its tags, for every project (including those without tasks).
    """

    __slots__ = ("_projects", "_projects_by_task", "_tagged")

    def __init__(self, *, task_ids: Iterable[TaskId], tags: Mapping[str, tuple[str, ...]]) -> None:
        by_task: dict[str, list[str]] = {}
        for task_id in task_ids:  # canonical order keeps every list sorted by project
            by_task.setdefault(task_id.task, []).append(task_id.project)
        self._projects_by_task = by_task
        self._projects = frozenset(tags)
        tagged: dict[str, set[str]] = {}
        for project, project_tags in tags.items():
            for tag in project_tags:
                tagged.setdefault(tag, set()).add(project)
        self._tagged = tagged

    def resolve(self, ref: TaskRef, *, bearing: str | None) -> tuple[tuple[TaskId, ...], str]:
        """Resolve ``ref``; return the ids in canonical order and, when empty, the reason.

        ``bearing`` must not be ``None`` for :attr:`RefKind.SAME` (the caller checks). The
        "others" forms (``^~``, ``[tag]~``) exclude nothing when there is no bearing project.
        """
        task = ref.task
        having = self._projects_by_task.get(task, [])
        match ref.kind:
            case RefKind.SAME | RefKind.PROJECT:
                project = bearing if ref.kind is RefKind.SAME else ref.project
                assert project is not None
                if project not in self._projects:
                    return (), f"there is no project '{project}'" + _hint(project, self._projects)
                if not _contains(having, project):
                    hint = _hint(task, self._tasks_of({project}))
                    return (), f"project '{project}' has no task '{task}'{hint}"
                return (TaskId(project, task),), ""
            case RefKind.ALL | RefKind.ALL_OTHERS:
                exclude = bearing if ref.kind is RefKind.ALL_OTHERS else None
                found = tuple(TaskId(p, task) for p in having if p != exclude)
                if found:
                    return found, ""
                if exclude is not None and having:
                    return (), f"no project other than '{exclude}' has a task '{task}'"
                return (), f"no project has a task '{task}'" + _hint(task, self._projects_by_task)
            case RefKind.TAG | RefKind.TAG_OTHERS:
                assert ref.tag is not None
                members = self._tagged.get(ref.tag)
                if not members:
                    hint = _hint(ref.tag, self._tagged)
                    return (), f"no project carries the tag '{ref.tag}'{hint}"
                exclude = bearing if ref.kind is RefKind.TAG_OTHERS else None
                found = tuple(TaskId(p, task) for p in having if p in members and p != exclude)
                if found:
                    return found, ""
                other = f" other than '{exclude}'" if exclude is not None else ""
                hint = _hint(task, self._tasks_of(members - {exclude} if exclude else members))
                return (), f"no project{other} tagged '{ref.tag}' has a task '{task}'{hint}"
        raise AssertionError(ref.kind)  # pragma: no cover

    def _tasks_of(self, projects: set[str] | frozenset[str]) -> list[str]:
        """Task names any of ``projects`` has (a scan: only on the error path)."""
        return [
            name
            for name, having in self._projects_by_task.items()
            if not projects.isdisjoint(having)
        ]


def _hint(word: str, candidates: Iterable[str]) -> str:
    """``; did you mean 'x'?`` for the closest candidate, or nothing when none is close."""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _contains(sorted_projects: list[str], project: str) -> bool:
    i = bisect_left(sorted_projects, project)
    return i < len(sorted_projects) and sorted_projects[i] == project
