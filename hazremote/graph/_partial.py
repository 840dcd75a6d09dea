"""Graph checks on what a failed load still parsed, so that one report holds every error.

Spec coverage:
* CFG-040, DAG-011 — the graph is built from what loaded; its diagnostics join the config's.
* REF-001..008 — "resolves to nothing" only where sure: never where a failed file may hold it.
Out of scope: loading (``hazremote.config``) and the checks themselves (``_graph``).
"""

from __future__ import annotations

from hazremote.domain.model import RefEntry
from hazremote.domain.refs import RefKind, TaskId, TaskRef
from hazremote.errors import Diagnostic, GraphError, PartialLoad
from hazremote.graph._graph import build_graph
from hazremote.graph._merge import attach_tasks
from hazremote.graph._resolve import RefIndex

__all__ = ["partial_diagnostics"]

#: The builder's wording of an unresolved reference (``_Builder.edges``).
_UNRESOLVED = "resolves to nothing"


def partial_diagnostics(partial: PartialLoad) -> list[Diagnostic]:
    """The graph diagnostics of ``partial.workspace`` that hold whatever failed to load."""
    workspace = partial.workspace
    try:
        build_graph(workspace)
        found: tuple[Diagnostic, ...] = ()
    except GraphError as error:
        found = error.diagnostics
    written: dict[tuple[str, str], tuple[str | None, TaskRef]] = {}
    for project in workspace.projects:
        for spec in project.tasks.values():
            for entry in (*spec.deps, *spec.weak_deps):
                written[(entry.origin.file, entry.origin.key_path)] = (project.name, entry.ref)
    for overlay in workspace.overlays:
        for spec in overlay.tasks.values():
            for entry in (*spec.deps, *spec.weak_deps):
                written[(entry.origin.file, entry.origin.key_path)] = (None, entry.ref)
    kept: list[Diagnostic] = []
    for diagnostic in found:
        reference = written.get((diagnostic.file, diagnostic.key_path))
        if reference is None:
            # Collisions and cycles: facts of what loaded, unless a broken overlay (a more
            # specific one might have settled a collision) leaves the merge uncertain.
            if not partial.overlays_incomplete:
                kept.append(diagnostic)
        elif _UNRESOLVED not in diagnostic.message or _sure(partial, *reference):
            kept.append(diagnostic)
    kept += _orphans(partial)
    return kept


def _orphans(partial: PartialLoad) -> list[Diagnostic]:
    """Unresolved references written in tasks that were left out for another error."""
    if not partial.orphan_refs:
        return []
    workspace = partial.workspace
    attached, _ = attach_tasks(workspace)
    index = RefIndex(
        task_ids=sorted(attached),
        tags={project.name: project.tags for project in workspace.projects},
    )
    out: list[Diagnostic] = []
    for task_id, entry in partial.orphan_refs:
        ids, reason = index.resolve(entry.ref, bearing=task_id.project)
        if not ids and _sure(partial, task_id.project, entry.ref):
            out.append(_unresolved(task_id, entry, reason))
    return out


def _unresolved(task_id: TaskId, entry: RefEntry, reason: str) -> Diagnostic:
    origin = entry.origin
    return Diagnostic(
        file=origin.file,
        key_path=origin.key_path,
        line=origin.line,
        message=f"task reference '{entry.ref}' of {task_id} {_UNRESOLVED}: {reason}",
    )


def _sure(partial: PartialLoad, bearing: str | None, ref: TaskRef) -> bool:
    """Whether "``ref`` resolves to nothing" holds whatever the failed files contain."""
    loaded = {project.name for project in partial.workspace.projects}

    def has_all_its_tasks(project: str) -> bool:
        return project not in partial.incomplete_projects and not partial.overlays_incomplete

    match ref.kind:
        case RefKind.PROJECT:
            assert ref.project is not None
            if ref.project in loaded:
                return has_all_its_tasks(ref.project)
            return ref.project not in partial.lost_projects and not partial.lost_unknown
        case RefKind.SAME:
            return bearing is not None and has_all_its_tasks(bearing)
        case _:
            return not (
                partial.incomplete_projects
                or partial.lost_projects
                or partial.lost_unknown
                or partial.overlays_incomplete
            )
