"""Overlapping output patterns of two tasks (DAG-016): warnings and peers, never all pairs.

Spec coverage:
* DAG-016 — output patterns of two tasks overlapping by literal prefix (DAG-013's rule) are a
  warning naming both tasks and both patterns, at the later task's pattern; equal literals
  stay an error (``test_validation``); a task's own patterns never warn; the overlapping
  tasks are each other's ``output_peers`` (what EXEC-020 checks at run time).
"""

from __future__ import annotations

import pytest

from hazremote.errors import Diagnostic, Severity
from hazremote.graph import build_graph
from tests.graph.graphkit import T, project, tid, workspace


def test_overlapping_output_patterns_are_a_warning_naming_both_tasks_and_patterns() -> None:
    """The issue's shape: lib:pack's `build/**` swallows lib:build's `build/libx.a`."""
    ws = workspace(
        project("lib", T(name="build", outputs=("build/libx.a",))),
        project("lib2", T(name="pack", line=7, outputs=("/packages/lib/build/**",))),
    )
    graph = build_graph(ws)
    assert graph.warnings == (
        Diagnostic(
            file="packages/lib2/haz.yml",
            key_path="tasks.pack.outputs[0]",
            line=7,
            message="outputs of lib:build and lib2:pack may overlap: 'build/libx.a' and "
            "'/packages/lib/build/**' can match the same file; a run in which both tasks "
            "materialise one file fails",
            severity=Severity.WARNING,
            tasks=(tid("lib:build"), tid("lib2:pack")),
        ),
    )
    assert graph.warnings[0].is_warning
    assert graph.output_peers[tid("lib:build")] == (tid("lib2:pack"),)
    assert graph.output_peers[tid("lib2:pack")] == (tid("lib:build"),)


@pytest.mark.parametrize(
    ("a", "b", "warned"),
    [
        ("/d/**", "/d/**", True),  # same prefix
        ("/d/**", "/d/sub/*.js", True),  # one prefix under the other
        ("/d/*.js", "/d/a.js", True),  # a literal under a glob
        ("/d/**", "/distribution/**", False),  # prefixes compare by segment
        ("/d/**", "/src/**", False),  # siblings
        ("/d/a.js", "/d/b.js", False),  # two different literals
        ("/**/*.o", "/out/a.o", True),  # a root glob overlaps everything
    ],
)
def test_which_output_pairs_warn(a: str, b: str, warned: bool) -> None:
    """DAG-016 uses DAG-013's relation: equal literals, or one literal prefix a segment
    prefix of the other's."""
    ws = workspace(project("x", T(name="t", outputs=(a,))), project("y", T(name="t", outputs=(b,))))
    graph = build_graph(ws)
    assert len(graph.warnings) == (1 if warned else 0)
    assert graph.output_peers.get(tid("x:t"), ()) == ((tid("y:t"),) if warned else ())


def test_a_tasks_own_overlapping_patterns_do_not_warn() -> None:
    ws = workspace(project("x", T(name="t", outputs=("dist/**", "dist/a.js"))))
    graph = build_graph(ws)
    assert graph.warnings == ()
    assert graph.output_peers.get(tid("x:t"), ()) == ()


def test_each_pair_of_patterns_warns_once_and_warnings_for_selects_by_task() -> None:
    ws = workspace(
        project("a", T(name="t", outputs=("/out/**",))),
        project("b", T(name="t", outputs=("/out/b.txt", "/out/c/**"))),
        project("c", T(name="t", outputs=("/elsewhere/**",))),
    )
    graph = build_graph(ws)
    assert [(w.key_path, w.tasks) for w in graph.warnings] == [
        ("tasks.t.outputs[0]", (tid("a:t"), tid("b:t"))),
        ("tasks.t.outputs[1]", (tid("a:t"), tid("b:t"))),
    ]
    assert graph.warnings_for([tid("c:t")]) == ()
    assert len(graph.warnings_for([tid("b:t")])) == 2


def test_many_projects_with_their_own_outputs_have_no_peers() -> None:
    """1,000 projects each with `dist/**`: no warning, no peer (the index is per prefix)."""
    ws = workspace(
        *(project(f"p{i:04d}", T(name="build", outputs=("dist/**",))) for i in range(1000))
    )
    graph = build_graph(ws)
    assert graph.warnings == ()
    assert all(not peers for peers in graph.output_peers.values())
