"""The graph and default inputs (PATH-001..016 as amended, DAG-013/014)."""

from __future__ import annotations

from hazremote.domain.model import ProjectFiles
from hazremote.graph import build_graph
from tests.graph.graphkit import T, project, tid, workspace


def test_tasks_without_inputs_each_with_outputs_are_not_a_cycle() -> None:
    """DAG-013 decision: default inputs create no producer edges, so two tasks of one
    project without `inputs`, each with outputs, are not a cycle error (DAG-014)."""
    graph = build_graph(
        workspace(
            project(
                "lib",
                T(name="build", inputs=None, outputs=("dist/**",)),
                T(name="docs", inputs=None, outputs=("site/**",)),
            )
        )
    )
    assert graph.producers[tid("lib:build")] == ()
    assert graph.producers[tid("lib:docs")] == ()


def test_declared_inputs_still_create_producer_edges() -> None:
    """DAG-013 unchanged for declared patterns."""
    graph = build_graph(
        workspace(
            project("lib", T(name="build", inputs=("src/**",), outputs=("dist/**",))),
            project("app", T(name="build", inputs=("/packages/lib/dist/**",))),
        )
    )
    assert graph.producers[tid("app:build")] == (tid("lib:build"),)


def test_absent_and_empty_inputs_differ_in_the_model() -> None:
    """PATH: an absent key carries the project's files (with nested projects' directories
    to leave out); `inputs: []` carries nothing."""
    graph = build_graph(
        workspace(
            project("root", T(name="all", inputs=None), dir=""),
            project("lib", T(name="build", inputs=None), T(name="none", inputs=()), dir="lib"),
            project("vendor", "x", dir="lib/vendor"),
            project("deep", "x", dir="lib/vendor/deep"),
            project("sibling", "x", dir="lib-extra"),
        )
    )
    assert graph.tasks[tid("lib:build")].default_inputs == ProjectFiles(
        dir="lib", nested=("lib/vendor",)
    )
    assert graph.tasks[tid("lib:none")].default_inputs is None
    assert graph.tasks[tid("lib:none")].inputs == ()
    assert graph.tasks[tid("root:all")].default_inputs == ProjectFiles(
        dir="",
        nested=("lib-extra", "lib"),  # in the order of "lib-extra/" < "lib/"
    )


def test_project_files_contains() -> None:
    """PATH: below the project directory, not in a nested project (segment-wise)."""
    files = ProjectFiles(dir="lib", nested=("lib/vendor",))
    assert files.contains("/lib/src/a.c")
    assert files.contains("/lib/vendor-notes.txt")
    assert not files.contains("/lib/vendor/v.c")
    assert not files.contains("/lib-extra/a.c")
    assert ProjectFiles(dir="", nested=("lib",)).contains("/top.txt")
