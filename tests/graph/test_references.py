"""deps/weakDeps resolution (REF-001..008, DAG-008..012) and command-line resolution."""

from __future__ import annotations

import pytest

from hazremote.domain.model import Workspace
from hazremote.domain.refs import RefKind, TaskRef, parse_ref
from hazremote.errors import Diagnostic, GraphError, ReferenceError_
from hazremote.graph import build_graph
from tests.graph.graphkit import T, overlay, project, tid, workspace


def _workspace(app_task: T) -> Workspace:
    """Four projects: app (tags ui, the task under test), web (ui), lib (core), tools (none)."""
    return workspace(
        project("app", app_task, "build", "gen", tags=("ui",)),
        project("web", "build", "gen", tags=("ui",)),
        project("lib", "build", tags=("core",)),
        project("tools", "gen"),
    )


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("~:gen", ["app:gen"]),
        ("lib:build", ["lib:build"]),
        ("^:gen", ["app:gen", "tools:gen", "web:gen"]),
        ("^~:gen", ["tools:gen", "web:gen"]),
        ("[ui]:gen", ["app:gen", "web:gen"]),
        ("[ui]~:gen", ["web:gen"]),
        ("[core]:build", ["lib:build"]),
    ],
)
def test_deps_resolve_relative_to_the_tasks_own_project(ref: str, expected: list[str]) -> None:
    """REF-001..006, DAG-008/009: every form in deps (hard) and weakDeps (soft)."""
    hard = build_graph(_workspace(T(name="test", deps=(ref,))))
    assert hard.hard[tid("app:test")] == tuple(tid(t) for t in expected)
    assert hard.soft[tid("app:test")] == ()
    soft = build_graph(_workspace(T(name="test", weak=(ref,))))
    assert soft.soft[tid("app:test")] == tuple(tid(t) for t in expected)
    assert soft.hard[tid("app:test")] == ()


def test_overlapping_references_merge_into_one_edge_each() -> None:
    """DAG-008: a task reached by two references is one predecessor, in canonical order."""
    graph = build_graph(_workspace(T(name="test", deps=("web:build", "^:build", "~:build"))))
    assert graph.hard[tid("app:test")] == (tid("app:build"), tid("lib:build"), tid("web:build"))


@pytest.mark.parametrize(
    ("ref", "reason"),
    [
        ("~:missing", "project 'app' has no task 'missing'"),
        ("nope:build", "there is no project 'nope'"),
        ("tools:build", "project 'tools' has no task 'build'"),
        ("^:missing", "no project has a task 'missing'"),
        ("^~:test", "no project other than 'app' has a task 'test'"),
        ("^~:missing", "no project has a task 'missing'"),
        ("[nope]:build", "no project carries the tag 'nope'"),
        ("[core]:gen", "no project tagged 'core' has a task 'gen'"),
        ("[core]~:gen", "no project other than 'app' tagged 'core' has a task 'gen'"),
        ("[ui]~:test", "no project other than 'app' tagged 'ui' has a task 'test'"),
    ],
)
def test_reference_resolving_to_nothing_is_an_error_at_its_origin(ref: str, reason: str) -> None:
    """REF-008, CFG-040: the diagnostic names the reference, its file, key path and line."""
    ws = _workspace(T(name="test", line=20, deps=("~:build", ref)))
    with pytest.raises(GraphError) as caught:
        build_graph(ws)
    assert caught.value.diagnostics == (
        Diagnostic(
            file="packages/app/haz.yml",
            key_path="tasks.test.deps[1]",
            line=22,
            message=f"task reference '{ref}' of app:test resolves to nothing: {reason}",
        ),
    )


@pytest.mark.parametrize(
    ("ref", "hint"),
    [
        ("~:test", ""),
        ("app:test", ""),
        ("^:test", "; write ^~:test to leave out its own project"),
        ("[ui]:test", "; write [ui]~:test to leave out its own project"),
    ],
)
def test_self_reference_is_an_error(ref: str, hint: str) -> None:
    """DAG-012: a task reaching itself, directly or through a broad form, is an error."""
    ws = workspace(
        project("app", T(name="test", line=4, weak=(ref,)), tags=("ui",)),
        project("web", "test", tags=("ui",)),
    )
    with pytest.raises(GraphError) as caught:
        build_graph(ws)
    assert caught.value.diagnostics == (
        Diagnostic(
            file="packages/app/haz.yml",
            key_path="tasks.test.weakDeps[0]",
            line=5,
            message=f"task app:test depends on itself through '{ref}'{hint}",
        ),
    )


def test_same_task_in_deps_and_weak_deps_is_an_error() -> None:
    """DAG-010: reported at the weakDeps entry that reaches the task again."""
    ws = _workspace(T(name="test", line=30, deps=("^:gen",), weak=("lib:build", "web:gen")))
    with pytest.raises(GraphError) as caught:
        build_graph(ws)
    assert caught.value.diagnostics == (
        Diagnostic(
            file="packages/app/haz.yml",
            key_path="tasks.test.weakDeps[1]",
            line=33,
            message="web:gen is in both deps and weakDeps of app:test; keep one",
        ),
    )


def test_overlay_task_references_resolve_per_attached_project() -> None:
    """REF-001: ``~`` inside an overlay task means the project the task is attached to."""
    ws = workspace(
        project("a", "build", tags=("ts",)),
        project("b", "build", tags=("ts",)),
        overlays=(overlay("lint", ("ts",), T(name="lint", deps=("~:build",))),),
    )
    graph = build_graph(ws)
    assert graph.hard[tid("a:lint")] == (tid("a:build"),)
    assert graph.hard[tid("b:lint")] == (tid("b:build"),)


def test_overlay_reference_errors_name_each_attached_project() -> None:
    """REF-008: one diagnostic per attached project, located in the overlay file."""
    ws = workspace(
        project("a", "build", tags=("ts",)),
        project("b", tags=("ts",)),
        overlays=(overlay("lint", ("ts",), T(name="lint", line=3, deps=("~:build",))),),
    )
    with pytest.raises(GraphError) as caught:
        build_graph(ws)
    assert [d.render() for d in caught.value.diagnostics] == [
        ".haz/tasks/lint.yml:4: tasks.lint.deps[0]: task reference '~:build' of b:lint resolves "
        "to nothing: project 'b' has no task 'build'"
    ]


# --- command-line resolution (TaskGraph.resolve) --------------------------------------------


@pytest.mark.parametrize(
    ("ref", "bearing", "expected"),
    [
        ("~:gen", "web", ["web:gen"]),
        ("^:gen", None, ["app:gen", "tools:gen", "web:gen"]),
        ("^~:gen", "web", ["app:gen", "tools:gen"]),
        ("^~:gen", None, ["app:gen", "tools:gen", "web:gen"]),
        ("[ui]~:gen", None, ["app:gen", "web:gen"]),
        ("[ui]~:gen", "app", ["web:gen"]),
        ("lib:build", None, ["lib:build"]),
    ],
)
def test_resolve_command_line_reference(ref: str, bearing: str | None, expected: list[str]) -> None:
    """REF-001..007: resolution relative to the bearing project (DISC-007), which may be absent;
    the "others" forms exclude nothing without one."""
    graph = build_graph(_workspace(T(name="test")))
    assert graph.resolve(parse_ref(ref), bearing=bearing) == tuple(tid(t) for t in expected)


@pytest.mark.parametrize(
    ("ref", "bearing", "message"),
    [
        (
            TaskRef(RefKind.SAME, "gen"),
            None,
            "task reference '~:gen' needs a bearing project, but the working directory is not "
            "inside one; write project:gen or ^:gen",
        ),
        (
            TaskRef(RefKind.ALL, "deploy"),
            None,
            "task reference '^:deploy' resolves to nothing: no project has a task 'deploy'",
        ),
        (
            TaskRef(RefKind.SAME, "gen"),
            "lib",
            "task reference '~:gen' resolves to nothing: project 'lib' has no task 'gen'",
        ),
    ],
)
def test_resolve_failure_names_the_reference(
    ref: TaskRef, bearing: str | None, message: str
) -> None:
    """REF-008: an empty resolution raises ReferenceError_ (exit 2) naming the reference."""
    graph = build_graph(_workspace(T(name="test")))
    with pytest.raises(ReferenceError_) as caught:
        graph.resolve(ref, bearing=bearing)
    assert str(caught.value) == message
    assert caught.value.exit_code == 2
