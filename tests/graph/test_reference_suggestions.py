"""A reference that resolves to nothing suggests what was probably meant.

Spec coverage:
* REF-001..008 — a reference that resolves to nothing is an error naming it; it now adds
  "did you mean" for a mistyped project name, task name or tag (difflib's close matches).
* DAG-011 — the suggestion is part of the diagnostic at the reference's file, key and line.
"""

from __future__ import annotations

import pytest

from hazremote.domain.refs import parse_cli_target
from hazremote.errors import GraphError, ReferenceError_
from hazremote.graph import build_graph
from tests.graph.graphkit import T, project, workspace


def _graph_error(ref: str) -> str:
    ws = workspace(
        project("app", T(name="test", deps=(ref,)), "build", tags=("ui",)),
        project("core", "build", "lint", tags=("lib",)),
        project("utils", "build", "format", tags=("lib",)),
    )
    with pytest.raises(GraphError) as info:
        build_graph(ws)
    (diagnostic,) = info.value.diagnostics
    return diagnostic.message


@pytest.mark.parametrize(
    ("ref", "suggestion"),
    [
        ("cor:build", "did you mean 'core'?"),
        ("core:biuld", "did you mean 'build'?"),
        ("utils:formatt", "did you mean 'format'?"),
        ("~:tset", "did you mean 'test'?"),
        ("^:lnit", "did you mean 'lint'?"),
        ("[lbi]:build", "did you mean 'lib'?"),
        ("[lib]:lnit", "did you mean 'lint'?"),
    ],
)
def test_an_unresolved_reference_suggests_a_close_name(ref: str, suggestion: str) -> None:
    message = _graph_error(ref)
    assert f"'{ref}'" in message
    assert message.endswith(suggestion), message


def test_no_suggestion_when_nothing_is_close() -> None:
    message = _graph_error("nope:build")
    assert "there is no project 'nope'" in message
    assert "did you mean" not in message


def test_a_task_of_another_project_is_not_suggested_for_a_project_reference() -> None:
    """core has no `format`; utils does, but core:format must not suggest a task core lacks."""
    assert "did you mean" not in _graph_error("core:format")


def test_a_command_line_target_gets_the_suggestion_too() -> None:
    graph = build_graph(workspace(project("core", "build"), project("app", "build")))
    with pytest.raises(ReferenceError_, match=r"did you mean 'core'\?"):
        graph.resolve(parse_cli_target("cote:build", has_bearing_project=False), bearing=None)
