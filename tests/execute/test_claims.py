"""The run's output claims (EXEC-020): who materialised which path, checked before writing.

Spec coverage:
* EXEC-020 — a claim is all or nothing and refuses a path another task holds, naming both
  tasks and the path; a released claim frees its paths; a fresh task is refused before it
  spawns when its output patterns match a path another task holds (through its peers, or
  every claim when no peers are known); concurrent claims of one path: exactly one wins.
"""

from __future__ import annotations

import threading

from hazremote.domain.model import CommandAction, Origin, Task, TaskSpec
from hazremote.domain.patterns import parse_pattern
from hazremote.domain.refs import TaskId
from hazremote.execute.claims import OutputClaims, OutputOverlap

A = TaskId("lib", "build")
B = TaskId("lib", "pack")
C = TaskId("web", "build")


def task(task_id: TaskId, *outputs: str) -> Task:
    spec = TaskSpec(
        name=task_id.task,
        action=CommandAction(argv=("true",)),
        outputs=outputs,
        origin=Origin(file="lib/haz.yml", key_path=f"tasks.{task_id.task}", line=1),
    )
    return Task(
        id=task_id,
        project_dir="lib",
        spec=spec,
        inputs=(),
        outputs=tuple(parse_pattern(o, project_dir="lib") for o in outputs),
    )


def test_a_path_held_by_another_task_is_refused_naming_both_and_nothing_is_claimed() -> None:
    claims = OutputClaims()
    assert claims.claim(A, ["/lib/build/libx.a"]) is None
    overlap = claims.claim(B, ["/lib/build/pack.txt", "/lib/build/libx.a"])
    assert overlap == OutputOverlap(path="/lib/build/libx.a", holder=A, claimant=B)
    assert overlap.describe() == (
        "output overlap: lib/build/libx.a is materialised by both lib:build and lib:pack"
    )
    # All or nothing: B's other path was not taken, so C may have it.
    assert claims.claim(C, ["/lib/build/pack.txt"]) is None


def test_claiming_again_is_fine_and_release_frees_the_paths() -> None:
    claims = OutputClaims()
    assert claims.claim(B, ["/lib/build/x"]) is None
    assert claims.claim(B, ["/lib/build/x", "/lib/build/y"]) is None  # a retry after a restore
    claims.release(B)
    assert claims.claim(A, ["/lib/build/x", "/lib/build/y"]) is None


def test_a_fresh_task_matching_a_peers_path_is_refused_before_it_spawns() -> None:
    claims = OutputClaims(peers={B: (A,), A: (B,)})
    assert claims.claim(A, ["/lib/build/libx.a"]) is None
    assert claims.conflict_before_spawn(task(B, "build/**")) == OutputOverlap(
        path="/lib/build/libx.a", holder=A, claimant=B
    )
    assert claims.conflict_before_spawn(task(B, "build/*.o")) is None  # no match
    assert claims.conflict_before_spawn(task(A, "build/libx.a")) is None  # its own path


def test_only_peers_are_consulted_when_they_are_known() -> None:
    """A path a non-peer holds cannot match (DAG-016: a match implies a prefix overlap); the
    peers mapping is what makes the check cheap, and without it every claim is checked."""
    with_peers = OutputClaims(peers={})
    without = OutputClaims()
    for claims in (with_peers, without):
        assert claims.claim(A, ["/lib/build/libx.a"]) is None
    assert with_peers.conflict_before_spawn(task(B, "build/**")) is None
    assert without.conflict_before_spawn(task(B, "build/**")) is not None


def test_concurrent_claims_of_one_path_have_exactly_one_winner() -> None:
    claims = OutputClaims()
    tasks = [TaskId("p", f"t{i}") for i in range(16)]
    start = threading.Barrier(len(tasks))
    results: dict[TaskId, OutputOverlap | None] = {}

    def claim(task_id: TaskId) -> None:
        start.wait()
        results[task_id] = claims.claim(task_id, [f"/out/{i}" for i in range(200)])

    threads = [threading.Thread(target=claim, args=(t,)) for t in tasks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [t for t, overlap in results.items() if overlap is None]
    assert len(winners) == 1
    assert all(o is None or o.holder == winners[0] for o in results.values())
