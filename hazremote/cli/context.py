"""Opening the workspace for a command: discovery, loading, the graph, the bearing project.

Spec coverage:
* DISC-001 — ``--workspace-root`` overrides discovery from the working directory.
* DISC-007 — the bearing project is computed from the working directory.
* CFG-040, DAG-011 — a failed load also reports the graph errors of what still parsed.
* REF-001..008 — :func:`resolve_targets`: bare ``task`` is ``~:task`` in a project, else ``^:task``.
* DAG-016, PATH-001..016 — :func:`print_warnings`: how every command shows warnings.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from hazremote.config import Trace
from hazremote.domain.model import Project, Workspace
from hazremote.domain.refs import TaskId, parse_cli_target
from hazremote.errors import ConfigError, Diagnostic, UsageError
from hazremote.graph import TaskGraph

__all__ = ["WorkspaceContext", "open_workspace", "print_warnings", "resolve_targets"]


def print_warnings(warnings: Iterable[Diagnostic]) -> None:
    """Configuration warnings on stderr, one line each, located like errors (CFG-040):
    ``haz: warning: lib/haz.yml:7: tasks.pack.outputs[0]: …``."""
    for warning in warnings:
        print(f"haz: warning: {warning.render()}", file=sys.stderr)


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkspaceContext:
    workspace: Workspace
    graph: TaskGraph
    bearing: Project | None
    cwd: Path

    @property
    def root(self) -> Path:
        return self.workspace.root

    def bearing_tasks(self) -> tuple[TaskId, ...]:
        """Every task of the bearing project, or of the workspace when there is none."""
        if self.bearing is None:
            return tuple(self.graph.tasks)
        name = self.bearing.name
        return tuple(t for t in self.graph.tasks if t.project == name)


def open_workspace(
    args: argparse.Namespace, *, cwd: Path | None = None, snapshot: bool = False
) -> WorkspaceContext:
    """Discover, load and validate the workspace; raise ConfigError/GraphError/UsageError.

    With ``snapshot``, the loaded workspace and graph are reused from
    ``.haz/state/workspace.snapshot`` while no configuration file changed
    (:mod:`hazremote.config.snapshot`); commands that already keep state there use it.
    """
    from hazremote.config import bearing_project, find_workspace_root

    here = Path(cwd if cwd is not None else os.getcwd()).resolve()
    if getattr(args, "workspace_root", None):
        root = Path(args.workspace_root).resolve()
        if not (root / ".haz" / "workspace.yml").is_file():
            raise UsageError(f"--workspace-root {args.workspace_root}: no .haz/workspace.yml there")
    else:
        found = find_workspace_root(here)
        if found is None:
            raise UsageError(
                f"no workspace found: neither {here} nor any parent has .haz/workspace.yml "
                "(run `haz init` to create one)"
            )
        root = found
    workspace, graph = _load(root, snapshot=snapshot)
    return WorkspaceContext(
        workspace=workspace, graph=graph, bearing=bearing_project(workspace, here), cwd=here
    )


def _load(root: Path, *, snapshot: bool) -> tuple[Workspace, TaskGraph]:
    def build() -> tuple[tuple[Workspace, TaskGraph], Trace]:
        from hazremote.config import load_workspace_traced  # imports PyYAML: only when loading
        from hazremote.graph import build_graph, partial_diagnostics

        try:
            workspace, seen = load_workspace_traced(root)
        except ConfigError as error:
            # CFG-040/DAG-011: one report holds every error, reference errors included.
            extra = partial_diagnostics(error.partial) if error.partial is not None else []
            if not extra:
                raise
            merged = sorted({*error.diagnostics, *extra}, key=Diagnostic.sort_key)
            raise ConfigError(merged) from None
        return (workspace, build_graph(workspace)), seen

    if not snapshot:
        return build()[0]
    from hazremote.config.snapshot import WorkspaceSnapshot, default_key_file

    snapshots = WorkspaceSnapshot(
        root / ".haz" / "state", root, key_file=default_key_file(os.environ)
    )
    loaded: tuple[Workspace, TaskGraph] = snapshots.load_or_build(build)
    return loaded


def resolve_targets(context: WorkspaceContext, targets: Iterable[str]) -> tuple[TaskId, ...]:
    """Resolve command-line targets to task ids (REF rules); errors name the target (exit 2)."""
    bearing = context.bearing.name if context.bearing is not None else None
    found: set[TaskId] = set()
    for text in targets:
        ref = parse_cli_target(text, has_bearing_project=bearing is not None)
        found.update(context.graph.resolve(ref, bearing=bearing))
    return tuple(sorted(found))
