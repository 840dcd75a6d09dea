"""The remote lookahead walks the graph level by level (RC-001), with a fake CacheTiers.

Spec coverage: RC-001 (one batch per level; a hit's recorded digests make its dependants'
keys derivable, CACHE-007; misses stop the walk below them; ``cache: false`` and key
errors are skipped), RC-002 (each level's local hits are handed over for sharing).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from hazremote.cache.manifest import Manifest
from hazremote.domain.digest import Digest, digest_bytes
from hazremote.domain.model import (
    CommandAction,
    Origin,
    Project,
    RefEntry,
    Task,
    TaskSpec,
    Workspace,
    WorkspaceSettings,
)
from hazremote.domain.refs import TaskId, parse_ref
from hazremote.execute.lookahead import remote_lookahead
from hazremote.graph import TaskGraph, build_graph
from hazremote.keys.components import PredecessorStreams
from hazremote.keys.resolve import InputError
from tests.execute.test_lifecycle_ports import HASH, manifest_for

_T = TypeVar("_T")


def graph_of(tasks: dict[str, tuple[str, ...]], *, uncached: tuple[str, ...] = ()) -> TaskGraph:
    """One project ``p``; ``tasks`` maps a task name to its hard dependencies."""
    origin = Origin(file="p/haz.yml", key_path="tasks", line=1)
    specs = {
        name: TaskSpec(
            name=name,
            action=CommandAction(argv=("true",)),
            inputs=(),
            deps=tuple(RefEntry(ref=parse_ref(d), origin=origin) for d in deps),
            cache=name not in uncached,
            origin=origin,
        )
        for name, deps in tasks.items()
    }
    project = Project(name="p", dir="p", tags=(), tasks=specs, file="p/haz.yml")
    return build_graph(
        Workspace(root=Path("/ws"), settings=WorkspaceSettings(), projects=(project,), overlays=())
    )


def key_of(task: Task, preds: Sequence[PredecessorStreams]) -> Digest:
    text = str(task.id) + "|" + ",".join(f"{p.task}:{p.stdout.hex[:8]}" for p in preds)
    return digest_bytes(HASH, text.encode())


@dataclass
class Tiers:
    local: dict[Digest, Manifest] = field(default_factory=dict)
    remote: dict[Digest, Manifest] = field(default_factory=dict)
    batches: list[list[Digest]] = field(default_factory=list)
    shared: list[Digest] = field(default_factory=list)

    @property
    def has_remote(self) -> bool:
        return True

    def lookup_ahead(self, key: Digest) -> Manifest | None:
        return self.local.get(key)

    async def look_ahead(
        self, keys: Sequence[Digest], *, local_hits: Sequence[Manifest]
    ) -> Mapping[Digest, Manifest]:
        self.batches.append(list(keys))
        self.shared.extend(m.key for m in local_hits)
        return {k: self.remote[k] for k in keys if k in self.remote}


async def inline(fn: Callable[[], _T]) -> _T:
    return fn()


def walk(graph: TaskGraph, tiers: Tiers, derive: Callable[..., Digest] = key_of) -> int:
    return asyncio.run(
        remote_lookahead(
            graph=graph,
            run_set=tuple(graph.tasks),
            tiers=tiers,
            derive=derive,
            on_key_thread=inline,
        )
    )


def key_chain(graph: TaskGraph, *names: str) -> list[Digest]:
    """The keys of a chain of tasks, each hitting with ``manifest_for``'s streams."""
    keys: list[Digest] = []
    preds: list[PredecessorStreams] = []
    for name in names:
        key = key_of(graph.tasks[TaskId("p", name)], preds)
        keys.append(key)
        hit = manifest_for(key)
        preds = [
            PredecessorStreams(
                task=TaskId("p", name),
                stdout=hit.stdout.hash,
                stderr=hit.stderr.hash,
                outputs=hit.outputs_digest(),
            )
        ]
    return keys


def test_hits_make_the_next_level_known_and_misses_stop_the_walk() -> None:
    """RC-001, CACHE-007: a (remote or local) hit's digests derive its dependant's key in
    the next batch; nothing below a miss is looked up."""
    graph = graph_of({"a": (), "b": ("p:a",), "c": ("p:b",), "d": ("p:c",)})
    a, b, c, _ = key_chain(graph, "a", "b", "c", "d")
    tiers = Tiers(remote={a: manifest_for(a)}, local={b: manifest_for(b)})
    asked = walk(graph, tiers)
    assert tiers.batches == [[a], [], [c]]  # b hit locally; c missed: d is never derived
    assert tiers.shared == [b]
    assert asked == 2


def test_uncached_tasks_and_key_errors_are_skipped() -> None:
    graph = graph_of({"a": (), "b": (), "c": ()}, uncached=("b",))

    def derive(task: Task, preds: Sequence[PredecessorStreams]) -> Digest:
        if task.id.task == "c":
            raise InputError("/p/x", "does not exist")
        return key_of(task, preds)

    tiers = Tiers()
    assert walk(graph, tiers, derive) == 1
    assert tiers.batches == [[key_of(graph.tasks[TaskId("p", "a")], [])]]
