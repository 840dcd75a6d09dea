"""The remote lookahead: a run's remote lookups batched up front, level by level.

Spec coverage:
* RC-001 — :func:`remote_lookahead`: derivable keys looked up remotely, one batch per level.
* CACHE-007 — a remote hit's recorded digests make the next level's keys known.
* RC-001 — the blobs of each level's hits start downloading at once.
* RC-002 — each level's local hits are handed to the tiers for sharing with the remote.
Out of scope: restoring anything (the probes do, with what this found).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from typing import Protocol, TypeVar

from hazremote.cache.manifest import Manifest
from hazremote.domain.digest import Digest
from hazremote.domain.model import Task
from hazremote.domain.refs import TaskId
from hazremote.graph import TaskGraph
from hazremote.keys.components import PredecessorStreams
from hazremote.keys.resolve import InputError

__all__ = ["DeriveKey", "LookaheadTiers", "OnKeyThread", "remote_lookahead"]

_T = TypeVar("_T")


class LookaheadTiers(Protocol):
    """What the lookahead asks of the tiers (:class:`~hazremote.cache.tiers.CacheTiers`
    provides it)."""

    @property
    def has_remote(self) -> bool: ...

    def lookup_ahead(self, key: Digest) -> Manifest | None: ...

    async def look_ahead(
        self, keys: Sequence[Digest], *, local_hits: Sequence[Manifest]
    ) -> Mapping[Digest, Manifest]: ...


class OnKeyThread(Protocol):
    """Runs ``fn`` where the deriver lives (the lifecycle's key thread)."""

    def __call__(self, fn: Callable[[], _T], /) -> Awaitable[_T]: ...


#: Derives a task's key from its hard predecessors' streams (raises :class:`InputError`).
DeriveKey = Callable[[Task, Sequence[PredecessorStreams]], Digest]


async def remote_lookahead(
    *,
    graph: TaskGraph,
    run_set: Sequence[TaskId],
    tiers: LookaheadTiers,
    derive: DeriveKey,
    on_key_thread: OnKeyThread,
) -> int:
    """Look the run's keys up remotely ahead of the probes; how many keys were asked.

    The scheduler admits at most ``-j`` probes at a time, so lookups coalesced at probe time
    come in batches of a few keys. Here the deriver's memo makes the probes' own derivations
    cheap, and a wrong prediction (a hit that fails to restore) only costs a lookup the probe
    repeats. Runs beside :func:`~hazremote.execute.scheduler.run_graph`.
    """
    if not tiers.has_remote:
        return 0
    resolved: dict[TaskId, PredecessorStreams] = {}
    asked = 0
    # Hard predecessors not yet resolved, per task of the run: a task joins the level after
    # the one that resolved its last predecessor (counted, not rescanned per level).
    waiting = {t: len(graph.hard.get(t, ())) for t in run_set}
    level = sorted(t for t, count in waiting.items() if count == 0)
    while level:
        derived = await on_key_thread(partial(_derive_level, graph, level, resolved, tiers, derive))
        wanted = [key for key, local in derived.values() if local is None]
        asked += len(wanted)
        hits = await tiers.look_ahead(
            wanted, local_hits=[local for _, local in derived.values() if local is not None]
        )
        ready: list[TaskId] = []
        for task_id, (key, local) in derived.items():
            manifest = local or hits.get(key)
            if manifest is None:
                continue
            resolved[task_id] = PredecessorStreams(
                task=task_id,
                stdout=manifest.stdout.hash,
                stderr=manifest.stderr.hash,
                outputs=manifest.outputs_digest(),
            )
            for dependant in graph.hard_dependants(task_id):
                if dependant in waiting:
                    waiting[dependant] -= 1
                    if waiting[dependant] == 0:
                        ready.append(dependant)
        level = sorted(ready)
    return asked


def _derive_level(
    graph: TaskGraph,
    level: Sequence[TaskId],
    resolved: Mapping[TaskId, PredecessorStreams],
    tiers: LookaheadTiers,
    derive: DeriveKey,
) -> dict[TaskId, tuple[Digest, Manifest | None]]:
    """Keys of ``level`` (cacheable tasks whose inputs resolve) and their local manifests."""
    derived: dict[TaskId, tuple[Digest, Manifest | None]] = {}
    for task_id in level:
        task = graph.tasks[task_id]
        if not task.spec.cache:
            continue
        preds = [resolved[p] for p in graph.hard.get(task_id, ())]
        try:
            key = derive(task, preds)
        except InputError:
            continue
        derived[task_id] = (key, tiers.lookup_ahead(key))
    return derived
