"""Git change filters of ``haz run``.

Paths come back workspace-absolute (``git … --relative``), so a workspace nested inside a
larger repository works too.

Spec coverage:
* EXEC-026 — ``--git-changed``: working tree and untracked files against HEAD.
* EXEC-027 — ``--git-staged``: the index against HEAD.
* EXEC-028 — ``--git-changed-since REV``: against the merge-base of REV and HEAD.
* EXEC-029 — tasks whose inputs match a changed path, plus their transitive hard dependants.
* PATH-001..016 — without ``inputs``, a changed path in the task's own project files matches.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from pathlib import Path

from hazremote.domain.model import ProjectFiles, Task
from hazremote.domain.refs import TaskId
from hazremote.errors import UsageError
from hazremote.graph import TaskGraph

__all__ = ["affected_tasks", "changed_paths"]


def _git(root: Path, *args: str) -> list[str]:
    try:
        result = subprocess.run(
            ["git", "-c", "core.quotepath=off", *args],
            cwd=root,
            capture_output=True,
            text=True,
            check=False,
        )
    except FileNotFoundError as error:
        raise UsageError("git filters need `git` on PATH") from error
    if result.returncode != 0:
        message = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "failed"
        raise UsageError(f"git {' '.join(args[:2])}: {message}")
    return [line for line in result.stdout.splitlines() if line]


def changed_paths(root: Path, *, mode: str, since: str | None = None) -> set[str]:
    """Workspace-absolute paths changed according to ``mode`` (changed | staged | since)."""
    if mode == "staged":
        names = _git(root, "diff", "--name-only", "--relative", "--cached", "HEAD")
    else:
        base = "HEAD"
        if mode == "since":
            assert since is not None
            base = _git(root, "merge-base", since, "HEAD")[0]
        names = _git(root, "diff", "--name-only", "--relative", base)
        names += _git(root, "ls-files", "--others", "--exclude-standard")
    return {"/" + name for name in names}


def affected_tasks(
    graph: TaskGraph, candidates: Iterable[TaskId], changed: set[str]
) -> tuple[TaskId, ...]:
    """Tasks among ``candidates`` whose inputs match a changed path, plus hard dependants."""
    direct: list[TaskId] = []
    for task_id in candidates:
        task = graph.tasks[task_id]
        project = task.default_inputs
        if project is not None:
            if any(_default_input(task, project, path) for path in changed):
                direct.append(task_id)
            continue
        positive = [p for p in task.inputs if not p.negated]
        negative = [p for p in task.inputs if p.negated]
        for path in changed:
            if any(p.matches(path) for p in positive) and not any(
                p.matches(path) for p in negative
            ):
                direct.append(task_id)
                break
    return graph.dependants_closure(direct)


def _default_input(task: Task, project: ProjectFiles, path: str) -> bool:
    """PATH: whether the changed ``path`` is one of the project files ``task`` hashes."""
    if not project.contains(path) or path.startswith(("/.haz/", "/.git/")):
        return False
    return not any(output.matches(path) for output in task.outputs)
