"""Canonical order (DAG-007), run sets (EXEC-001), dependant closures, and a generated
workspace of 2,000 tasks checked against independent brute-force computations."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hazremote.domain.patterns import parse_pattern, patterns_overlap
from hazremote.domain.refs import TaskId
from hazremote.errors import ReferenceError_
from hazremote.graph import TaskGraph, build_graph
from hazremote.graph._producers import OutputIndex
from tests.graph.graphkit import T, generated_workspace, project, tid, workspace


def _diamond() -> TaskGraph:
    """lib:build ← {web:build, api:build} ← app:deploy; app:lint weakly after app:deploy."""
    return build_graph(
        workspace(
            project("web", T(name="build", deps=("lib:build",))),
            project("lib", "build", T(name="check")),
            project("api", T(name="build", deps=("lib:build",)), tags=("backend", "heavy")),
            project(
                "app",
                T(name="deploy", deps=("[backend]:build", "web:build")),
                T(name="lint", weak=("~:deploy",)),
            ),
        )
    )


def test_tasks_and_tags_are_in_canonical_order() -> None:
    """DAG-007: tasks sorted by (project, task); tags keyed by every project."""
    graph = _diamond()
    assert [str(t) for t in graph.tasks] == [
        "api:build",
        "app:deploy",
        "app:lint",
        "lib:build",
        "lib:check",
        "web:build",
    ]
    assert dict(graph.tags) == {"api": ("backend", "heavy"), "app": (), "lib": (), "web": ()}
    assert all(graph.tasks[t].id == t for t in graph.tasks)


@pytest.mark.parametrize(
    ("roots", "expected"),
    [
        (["app:deploy"], ["api:build", "app:deploy", "lib:build", "web:build"]),
        (["app:lint"], ["app:lint"]),  # soft edges do not pull tasks in (DAG-009)
        (["web:build", "api:build"], ["api:build", "lib:build", "web:build"]),
        (["lib:check", "lib:check"], ["lib:check"]),
        ([], []),
    ],
)
def test_run_set_is_roots_plus_transitive_hard_predecessors(
    roots: list[str], expected: list[str]
) -> None:
    """EXEC-001: the run set, in canonical order."""
    assert _diamond().run_set(tid(r) for r in roots) == tuple(tid(e) for e in expected)


@pytest.mark.parametrize(
    ("roots", "expected"),
    [
        (["lib:build"], ["api:build", "app:deploy", "lib:build", "web:build"]),
        (["app:deploy"], ["app:deploy"]),  # app:lint depends only weakly
        (["lib:check"], ["lib:check"]),
    ],
)
def test_dependants_closure_follows_hard_edges_downstream(
    roots: list[str], expected: list[str]
) -> None:
    """DAG-008: roots plus every transitive hard dependant, canonical order."""
    assert _diamond().dependants_closure(tid(r) for r in roots) == tuple(tid(e) for e in expected)


def test_hard_dependants_are_direct_only() -> None:
    """DAG-008: direct dependants, canonical order; none for a leaf."""
    graph = _diamond()
    assert graph.hard_dependants(tid("lib:build")) == (tid("api:build"), tid("web:build"))
    assert graph.hard_dependants(tid("app:deploy")) == ()


def test_closures_reject_unknown_tasks() -> None:
    """EXEC-001: a root that is not in the graph is an error naming it."""
    graph = _diamond()
    with pytest.raises(ReferenceError_, match="unknown task nope:build"):
        graph.run_set([tid("nope:build")])
    with pytest.raises(ReferenceError_, match="unknown task lib:nope"):
        graph.dependants_closure([tid("lib:nope")])


def _brute_closure(roots: set[str], edges: dict[str, set[str]]) -> list[str]:
    seen = set(roots)
    changed = True
    while changed:
        changed = False
        for node in list(seen):
            new = edges.get(node, set()) - seen
            if new:
                seen |= new
                changed = True
    return sorted(seen)


def test_generated_workspace_of_2000_tasks() -> None:
    """DAG-001..016, EXEC-001 at scale: 400 projects x 5 tasks with random acyclic deps,
    tags and two overlays build without error; order, edges and closures match brute force."""
    ws, expected = generated_workspace(projects=400, rng=random.Random(2024))
    graph = build_graph(ws)
    assert len(graph.tasks) == 2000
    assert list(graph.tasks) == sorted(graph.tasks)
    assert {str(t): {str(p) for p in graph.hard[t]} for t in graph.tasks} == expected
    for task_id, task in graph.tasks.items():
        if task_id.task == "lint":
            heavy = "heavy" in graph.tags[task_id.project]
            origin = ".haz/tasks/lint-heavy.yml" if heavy else ".haz/tasks/lint-all.yml"
            assert task.spec.origin.file == origin
        if task_id.task == "typecheck":
            assert graph.soft[task_id] == (TaskId(task_id.project, "build"),)
        if task_id.task == "build":
            # Producer edges: exactly the upstream builds whose dist/** the task reads.
            assert graph.producers[task_id] == graph.hard[task_id]

    rng = random.Random(5)
    forward = {t: set(ps) for t, ps in expected.items()}
    backward: dict[str, set[str]] = {}
    for name, predecessors in expected.items():
        for p in predecessors:
            backward.setdefault(p, set()).add(name)
    for _ in range(25):
        roots = {str(t) for t in rng.sample(list(graph.tasks), rng.randint(1, 4))}
        run_set = graph.run_set(tid(r) for r in roots)
        assert [str(t) for t in run_set] == _brute_closure(roots, forward)
        closure = graph.dependants_closure(tid(r) for r in roots)
        assert [str(t) for t in closure] == _brute_closure(roots, backward)


# --- the producer index agrees with the all-pairs definition ----------------------------------

_SEGMENT = st.sampled_from(["a", "b", "src", "dist", "*", "*.js", "**", "x?", "{a,b}"])
_PATTERN = st.lists(_SEGMENT, min_size=1, max_size=4).map("/".join)


@given(
    outputs=st.lists(st.tuples(st.integers(0, 5), _PATTERN), max_size=12),
    inputs=st.lists(_PATTERN, min_size=1, max_size=6),
)
def test_output_index_agrees_with_all_pairs_overlap(
    outputs: list[tuple[int, str]], inputs: list[str]
) -> None:
    """DAG-013: the prefix index finds exactly the outputs that patterns_overlap accepts."""
    index = OutputIndex()
    declared = []
    for owner_number, text in outputs:
        owner = TaskId(f"p{owner_number}", "t")
        pattern = parse_pattern(text, project_dir="w")
        index.add(pattern, owner)
        declared.append((owner, pattern))
    for text in inputs:
        wanted = parse_pattern(text, project_dir="w")
        expected = {owner for owner, output in declared if patterns_overlap(output, wanted)}
        assert index.overlapping(wanted) == expected
