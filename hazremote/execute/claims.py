"""Which task of a run materialised which workspace path: the output-overlap check.

Spec coverage:
* EXEC-020 — :meth:`OutputClaims.claim`: a task's paths, all or nothing, refused when held.
* EXEC-020 — :meth:`OutputClaims.conflict_before_spawn`: a fresh task matching a held path.
* DAG-016 — only a task's ``output_peers`` can hold such a path: no cost for tasks without.
Out of scope: what a violation does to the run (the scheduler stops admission); two tasks
running at once that write one file (the second to finish is refused when it claims).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from hazremote.domain.model import Task
from hazremote.domain.refs import TaskId

__all__ = ["OutputClaims", "OutputOverlap"]


@dataclass(frozen=True, slots=True, kw_only=True)
class OutputOverlap:
    """EXEC-020: ``claimant`` would materialise ``path``, which ``holder`` already did.

    Attributes:
        path: Workspace-absolute path (leading ``/``).
        holder: The task that materialised it first in this run.
        claimant: The task refused.
    """

    path: str
    holder: TaskId
    claimant: TaskId

    def describe(self) -> str:
        """``output overlap: build/libx.a is materialised by both lib:build and lib:pack``."""
        return (
            f"output overlap: {self.path.lstrip('/')} is materialised by both "
            f"{self.holder} and {self.claimant}"
        )


class OutputClaims:
    """The paths materialised so far in one run, each held by the first task to claim it.

    Thread-safe: restores claim on the key thread while fresh tasks claim on the event loop.

    Args:
        peers: Task → the tasks whose output patterns overlap its own (``TaskGraph.
            output_peers``). Without it, :meth:`conflict_before_spawn` checks every path
            claimed so far.
    """

    def __init__(self, *, peers: Mapping[TaskId, tuple[TaskId, ...]] | None = None) -> None:
        self._peers = peers
        self._lock = threading.Lock()
        self._holders: dict[str, TaskId] = {}
        self._held: dict[TaskId, set[str]] = {}

    def claim(self, task: TaskId, paths: Iterable[str]) -> OutputOverlap | None:
        """Hold every one of ``paths`` for ``task``, or none of them and say why not.

        Called with a hit's manifest paths before its restore writes anything, and with a
        fresh run's collected outputs before they are stored. A path ``task`` holds already
        is fine (a failed restore's claim, then the run).

        Returns:
            ``None`` when ``task`` now holds them all; else the overlap with the first (in
            sorted order) path another task holds.
        """
        if self._peers is not None and not self._peers.get(task):
            # Without output peers no other task can materialise one of these paths (an
            # actual match implies a literal-prefix overlap), and no peer's spawn check asks
            # about them: nothing to hold. Most tasks of a replay take this path.
            return None
        wanted = sorted(set(paths))
        with self._lock:
            for path in wanted:
                holder = self._holders.get(path, task)
                if holder != task:
                    return OutputOverlap(path=path, holder=holder, claimant=task)
            held = self._held.setdefault(task, set())
            for path in wanted:
                self._holders[path] = task
                held.add(path)
        return None

    def release(self, task: TaskId) -> None:
        """Drop what ``task`` holds (a restore that did not happen after all)."""
        with self._lock:
            for path in self._held.pop(task, ()):
                if self._holders.get(path) == task:
                    del self._holders[path]

    def conflict_before_spawn(self, task: Task) -> OutputOverlap | None:
        """The first path (sorted) held by another task that ``task``'s outputs match.

        Such a task must not start: after it ran, that file would be collected as its output
        too (and stored in its entry). Only its ``output_peers`` can hold such a path.
        """
        patterns = [p for p in task.outputs if not p.negated]
        if not patterns:
            return None
        with self._lock:
            if self._peers is None:
                candidates = [(p, h) for p, h in self._holders.items() if h != task.id]
            else:
                candidates = [
                    (path, peer)
                    for peer in self._peers.get(task.id, ())
                    for path in self._held.get(peer, ())
                    if peer != task.id
                ]
        for path, holder in sorted(candidates):
            if any(p.matches(path) for p in patterns):
                return OutputOverlap(path=path, holder=holder, claimant=task.id)
        return None
