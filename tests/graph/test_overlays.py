"""Overlay merge (DAG-001..006): which definition of a task each project gets."""

from __future__ import annotations

import pytest

from hazremote.errors import Diagnostic, GraphError
from hazremote.graph import build_graph
from tests.graph.graphkit import T, overlay, project, tid, workspace


def test_own_task_wins_over_overlay() -> None:
    """DAG-001: a project's own definition of a task wins over an overlay defining it too."""
    ws = workspace(
        project("web", T(name="lint", inputs=("own.cfg",)), tags=("frontend",)),
        overlays=(overlay("lint", ("frontend",), T(name="lint", inputs=("overlay.cfg",))),),
    )
    task = build_graph(ws).tasks[tid("web:lint")]
    assert task.spec.origin.file == "packages/web/haz.yml"
    assert [p.absolute for p in task.inputs] == ["/packages/web/own.cfg"]


def test_overlay_attaches_only_to_projects_with_a_matching_tag() -> None:
    """DAG-002: overlay tasks attach to every project carrying one of the tagsFilter tags."""
    ws = workspace(
        project("web", tags=("frontend",)),
        project("api", tags=("backend", "heavy")),
        project("docs"),
        overlays=(overlay("fmt", ("frontend", "heavy"), T(name="fmt", outputs=("fmt.log",))),),
    )
    graph = build_graph(ws)
    assert list(graph.tasks) == [tid("api:fmt"), tid("web:fmt")]
    # Overlay patterns resolve against each attached project's directory.
    assert graph.tasks[tid("api:fmt")].outputs[0].absolute == "/packages/api/fmt.log"
    assert graph.tasks[tid("web:fmt")].outputs[0].absolute == "/packages/web/fmt.log"


def test_overlay_without_matching_projects_contributes_nothing() -> None:
    """DAG-002: an overlay whose tags no project carries attaches no task."""
    ws = workspace(project("web", "build"), overlays=(overlay("x", ("nobody",), "lint"),))
    assert list(build_graph(ws).tasks) == [tid("web:build")]


def test_most_specific_overlay_wins() -> None:
    """DAG-003..005: of two overlays defining a task, the one matching a strict subset wins."""
    ws = workspace(
        project("web", tags=("frontend", "react")),
        project("admin", tags=("frontend",)),
        overlays=(
            overlay("react", ("react",), T(name="lint", inputs=("react.cfg",))),
            overlay("frontend", ("frontend",), T(name="lint", inputs=("front.cfg",))),
        ),
    )
    graph = build_graph(ws)
    assert graph.tasks[tid("web:lint")].spec.origin.file == ".haz/tasks/react.yml"
    assert graph.tasks[tid("admin:lint")].spec.origin.file == ".haz/tasks/frontend.yml"


def test_winner_must_be_a_strict_subset_of_every_other_candidate() -> None:
    """DAG-005: with three candidates, the winner is below each of the other two."""
    ws = workspace(
        project("a", tags=("x",)),
        project("b", tags=("x", "y", "z")),
        project("c", tags=("y",)),
        overlays=(
            overlay("ox", ("x",), T(name="lint", line=2)),  # {a, b}
            overlay("oy", ("y",), T(name="lint", line=3)),  # {b, c}
            overlay("oz", ("z",), T(name="lint", line=4)),  # {b} ⊂ both
        ),
    )
    assert build_graph(ws).tasks[tid("b:lint")].spec.origin.file == ".haz/tasks/oz.yml"


def _collision_message(project_name: str) -> str:
    return (
        f"task 'lint' of project '{project_name}' is defined by overlays 'one' "
        "(.haz/tasks/one.yml), 'two' (.haz/tasks/two.yml), and none of them matches a strict "
        "subset of the projects the others match; define 'lint' in the project's own haz.yml "
        "or narrow an overlay's tagsFilter"
    )


@pytest.mark.parametrize(
    ("tags_one", "tags_two", "colliding"),
    [
        pytest.param(("frontend",), ("frontend",), ["admin", "web"], id="equal matched sets"),
        pytest.param(("frontend",), ("react",), ["web"], id="incomparable matched sets"),
    ],
)
def test_overlay_collision_is_an_error_naming_overlays_project_and_task(
    tags_one: tuple[str, ...], tags_two: tuple[str, ...], colliding: list[str]
) -> None:
    """DAG-006: no strictly most specific overlay → one error per project, at the task of
    the first overlay (by name); projects matched by only one overlay are unaffected."""
    ws = workspace(
        project("web", tags=("frontend", "react")),
        project("admin", tags=("frontend",)),
        project("mobile", tags=("react",)),
        overlays=(
            overlay("two", tags_two, T(name="lint", line=7)),
            overlay("one", tags_one, T(name="lint", line=5)),
        ),
    )
    with pytest.raises(GraphError) as caught:
        build_graph(ws)
    assert caught.value.diagnostics == tuple(
        Diagnostic(
            file=".haz/tasks/one.yml",
            key_path="tasks.lint",
            line=5,
            message=_collision_message(name),
        )
        for name in colliding
    )
    assert caught.value.exit_code == 2


def test_collision_resolved_by_the_projects_own_task() -> None:
    """DAG-001 before DAG-006: a project defining the task itself has no collision."""
    ws = workspace(
        project("web", "lint", tags=("frontend",)),
        overlays=(overlay("one", ("frontend",), "lint"), overlay("two", ("frontend",), "lint")),
    )
    assert build_graph(ws).tasks[tid("web:lint")].spec.origin.file == "packages/web/haz.yml"
