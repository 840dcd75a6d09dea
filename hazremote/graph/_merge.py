"""Attaching tasks to projects: a project's own tasks, then overlay tasks.

Spec coverage:
* DAG-001..006 — own definitions win; the most specific overlay wins; otherwise a collision.
Out of scope: resolving patterns and references of the attached tasks (``_graph``).
"""

from __future__ import annotations

from dataclasses import dataclass

from hazremote.domain.model import Overlay, Project, TaskSpec, Workspace
from hazremote.domain.refs import TaskId
from hazremote.errors import Diagnostic

__all__ = ["Attached", "attach_tasks"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Attached:
    """A task spec attached to a project (``overlay`` is None for the project's own task)."""

    project: Project
    spec: TaskSpec
    overlay: Overlay | None


def _matched_projects(workspace: Workspace) -> dict[str, frozenset[str]]:
    """Overlay name → names of the projects carrying one of its tags."""
    tagged: dict[str, set[str]] = {}
    for project in workspace.projects:
        for tag in project.tags:
            tagged.setdefault(tag, set()).add(project.name)
    matched: dict[str, frozenset[str]] = {}
    for overlay in workspace.overlays:
        members: set[str] = set()
        for tag in overlay.tags_filter:
            members |= tagged.get(tag, set())
        matched[overlay.name] = frozenset(members)
    return matched


def _most_specific(candidates: list[Overlay], matched: dict[str, frozenset[str]]) -> Overlay | None:
    for winner in candidates:
        own = matched[winner.name]
        if all(own < matched[other.name] for other in candidates if other is not winner):
            return winner
    return None


def _collision(project: Project, name: str, candidates: list[Overlay]) -> Diagnostic:
    first = candidates[0].tasks[name].origin
    listed = ", ".join(f"'{o.name}' ({o.file})" for o in candidates)
    return Diagnostic(
        file=first.file,
        key_path=first.key_path,
        line=first.line,
        message=(
            f"task '{name}' of project '{project.name}' is defined by overlays {listed}, and "
            "none of them matches a strict subset of the projects the others match; define "
            f"'{name}' in the project's own haz.yml or narrow an overlay's tagsFilter"
        ),
    )


def attach_tasks(workspace: Workspace) -> tuple[dict[TaskId, Attached], list[Diagnostic]]:
    """Every task of every project after the overlay merge, and the collisions found."""
    matched = _matched_projects(workspace)
    overlays_of: dict[str, list[Overlay]] = {}
    for overlay in sorted(workspace.overlays, key=lambda o: o.name):
        for project_name in matched[overlay.name]:
            overlays_of.setdefault(project_name, []).append(overlay)
    attached: dict[TaskId, Attached] = {}
    diagnostics: list[Diagnostic] = []
    for project in workspace.projects:
        for name, spec in project.tasks.items():
            attached[TaskId(project.name, name)] = Attached(
                project=project, spec=spec, overlay=None
            )
        by_name: dict[str, list[Overlay]] = {}
        for overlay in overlays_of.get(project.name, ()):
            for name in overlay.tasks:
                if name not in project.tasks:
                    by_name.setdefault(name, []).append(overlay)
        for name, candidates in by_name.items():
            chosen = candidates[0] if len(candidates) == 1 else _most_specific(candidates, matched)
            if chosen is None:
                diagnostics.append(_collision(project, name, candidates))
                continue
            attached[TaskId(project.name, name)] = Attached(
                project=project, spec=chosen.tasks[name], overlay=chosen
            )
    return attached, diagnostics
