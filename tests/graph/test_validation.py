"""Producer edges (DAG-013), cycles (DAG-014), output collisions (DAG-016), pattern errors,
and the collection of every problem into one GraphError (DAG-011)."""

from __future__ import annotations

import pytest

from hazremote.errors import Diagnostic, GraphError
from hazremote.graph import build_graph
from tests.graph.graphkit import T, overlay, project, tid, workspace


def _cycle(*ids: str) -> Diagnostic:
    return Diagnostic(
        file="",
        key_path="",
        line=None,
        message="dependency cycle (over deps, weakDeps and output→input producer edges) among "
        + ", ".join(ids),
    )


# --- DAG-013 producer edges ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "input_", "edge"),
    [
        ("dist/out.js", "/packages/gen/dist/out.js", True),  # equal literals
        ("dist/out.js", "/packages/gen/dist/other.js", False),  # different literals
        ("dist/out.js", "/packages/gen/dist", False),  # literal prefix of a literal: not equal
        ("dist/**", "/packages/gen/dist/out.js", True),  # glob prefix is a prefix of the literal
        ("dist/out.js", "/packages/gen/dist/*.js", True),  # literal extends the glob's prefix
        ("dist/**", "/packages/gen/**/*.js", True),  # input prefix /packages/gen is shorter
        ("dist/**", "/packages/gen/distribution/*.js", False),  # prefixes compare by segment
        ("dist/**", "/packages/gen/src/**", False),  # siblings
        ("/shared/**", "/**/*.json", True),  # a root glob overlaps everything
        ("/shared/a.json", "/*.json", True),  # prefix "/" of the input covers any literal
        ("dist/*.{js,map}", "/packages/gen/dist/x.map", True),
    ],
)
def test_producer_edge_when_output_and_input_overlap(output: str, input_: str, edge: bool) -> None:
    """DAG-013: equal literals, or one literal prefix a segment prefix of the other's."""
    ws = workspace(
        project("gen", T(name="build", outputs=(output,))),
        project("web", T(name="build", inputs=(input_,))),
    )
    graph = build_graph(ws)
    assert graph.producers[tid("web:build")] == ((tid("gen:build"),) if edge else ())
    # Producer edges do not order tasks: no hard or soft edge appears.
    assert graph.hard[tid("web:build")] == ()
    assert graph.soft[tid("web:build")] == ()


def test_negated_inputs_create_no_producer_edge() -> None:
    """DAG-013, PATH: an exclusion ``!pattern`` is not something the task reads."""
    ws = workspace(
        project("gen", T(name="build", outputs=("dist/**",))),
        project("web", T(name="build", inputs=("src/**", "!/packages/gen/dist/**"))),
    )
    assert build_graph(ws).producers[tid("web:build")] == ()


def test_formatter_may_produce_its_own_inputs() -> None:
    """DAG-013/014: a task's producer edge to itself is allowed and is not a cycle."""
    ws = workspace(project("web", T(name="fmt", inputs=("src/**",), outputs=("src/**",))))
    assert build_graph(ws).producers[tid("web:fmt")] == (tid("web:fmt"),)


def test_producers_of_a_consumer_are_in_canonical_order() -> None:
    """DAG-007/013: several producers come back sorted, each once."""
    ws = workspace(
        project("z", T(name="b", outputs=("/gen/z.txt",)), T(name="a", outputs=("/gen/z2/**",))),
        project("a", T(name="x", outputs=("/gen/**", "/gen/a.txt"))),
        project("m", T(name="use", inputs=("/gen/**", "/gen/a.txt"))),
    )
    assert build_graph(ws).producers[tid("m:use")] == (tid("a:x"), tid("z:a"), tid("z:b"))


# --- DAG-014 cycles --------------------------------------------------------------------------


def test_cycle_over_hard_edges() -> None:
    """DAG-014: a 2-cycle of deps is reported as its tasks in canonical order."""
    ws = workspace(
        project("b", T(name="build", deps=("a:build",))),
        project("a", T(name="build", deps=("b:build",))),
    )
    with pytest.raises(GraphError) as caught:
        build_graph(ws)
    assert caught.value.diagnostics == (_cycle("a:build", "b:build"),)


def test_cycle_mixing_soft_and_producer_edges() -> None:
    """DAG-014: soft and producer edges count for cycles (not only deps)."""
    ws = workspace(
        project("a", T(name="gen", inputs=("/b/out.txt",), outputs=("/a/out.txt",))),
        project("b", T(name="gen", weak=("c:check",), outputs=("/b/out.txt",))),
        project("c", T(name="check", inputs=("/a/**",))),
    )
    with pytest.raises(GraphError) as caught:
        build_graph(ws)
    assert caught.value.diagnostics == (_cycle("a:gen", "b:gen", "c:check"),)


def test_component_with_several_cycles_is_reported_once() -> None:
    """DAG-014: overlapping cycles in one strongly connected component → one report."""
    ws = workspace(
        project("p", T(name="a", deps=("~:b", "q:c")), T(name="b", deps=("~:a",)), "d"),
        project("q", T(name="c", deps=("p:a",))),
    )
    with pytest.raises(GraphError) as caught:
        build_graph(ws)
    assert caught.value.diagnostics == (_cycle("p:a", "p:b", "q:c"),)


def test_separate_cycles_are_reported_separately() -> None:
    """DAG-014, DAG-011: two disjoint cycles are two diagnostics."""
    ws = workspace(
        project("p", T(name="a", deps=("~:b",)), T(name="b", deps=("~:a",))),
        project("q", T(name="a", deps=("~:b",)), T(name="b", weak=("~:a",))),
    )
    with pytest.raises(GraphError) as caught:
        build_graph(ws)
    assert caught.value.diagnostics == (_cycle("p:a", "p:b"), _cycle("q:a", "q:b"))


def test_long_cycle_does_not_exhaust_the_stack() -> None:
    """DAG-014: cycle detection is iterative; a 3,000-task ring is one cycle."""
    size = 3000
    projects = [
        project(f"p{i:04d}", T(name="t", deps=(f"p{(i + 1) % size:04d}:t",))) for i in range(size)
    ]
    with pytest.raises(GraphError) as caught:
        build_graph(workspace(*projects))
    assert caught.value.diagnostics == (_cycle(*(f"p{i:04d}:t" for i in range(size))),)


# --- DAG-016 literal output collisions -------------------------------------------------------


def test_two_tasks_declaring_one_literal_output_is_an_error() -> None:
    """DAG-016: the same workspace-absolute literal output from two tasks; reported once, at
    the first declaring task in canonical order, naming every declaring task."""
    ws = workspace(
        project("web", T(name="build", line=8, outputs=("dist/a.js", "/out/bundle.js"))),
        project("api", T(name="pack", line=3, outputs=("/out/bundle.js",))),
        project("out", T(name="x", outputs=("bundle.js",)), dir="out"),
    )
    with pytest.raises(GraphError) as caught:
        build_graph(ws)
    assert caught.value.diagnostics == (
        Diagnostic(
            file="packages/api/haz.yml",
            key_path="tasks.pack.outputs[0]",
            line=3,
            message="output '/out/bundle.js' is declared by several tasks: api:pack, out:x, "
            "web:build",
        ),
    )


def test_glob_output_overlaps_and_repeats_within_one_task_are_not_collisions() -> None:
    """DAG-016: glob overlaps are checked at run time (EXEC-020); one task may repeat itself."""
    ws = workspace(
        project("web", T(name="build", outputs=("dist/**", "dist/a.js", "dist/a.js"))),
        project("api", T(name="build", outputs=("/packages/web/dist/**",))),
    )
    assert len(build_graph(ws).tasks) == 2


# --- patterns --------------------------------------------------------------------------------


def test_patterns_resolve_against_the_project_directory() -> None:
    """PATH: relative patterns join the project dir; ``/`` patterns are workspace-absolute."""
    ws = workspace(
        project("root", T(name="t", inputs=("a.txt", "!b/**", "/c.txt"), outputs=("o",)), dir=""),
        project("web", T(name="t", inputs=("src/*.ts",))),
    )
    graph = build_graph(ws)
    root = graph.tasks[tid("root:t")]
    assert [(p.absolute, p.negated) for p in root.inputs] == [
        ("/a.txt", False),
        ("/b/**", True),
        ("/c.txt", False),
    ]
    assert [p.absolute for p in root.outputs] == ["/o"]
    assert [p.absolute for p in graph.tasks[tid("web:t")].inputs] == ["/packages/web/src/*.ts"]


@pytest.mark.parametrize(
    ("inputs", "outputs", "key_path", "message"),
    [
        (
            ("ok", "../x"),
            (),
            "tasks.t.inputs[1]",
            "'../x' has a '..' segment; '.' and '..' are not allowed (PATH)",
        ),
        (
            (),
            ("!dist/**",),
            "tasks.t.outputs[0]",
            "'!dist/**': '!' exclusions are only allowed in inputs",
        ),
        (
            ("src//a",),
            (),
            "tasks.t.inputs[0]",
            "'src//a' has an empty segment ('//' or a trailing '/')",
        ),
        ((), ("a/{b",), "tasks.t.outputs[0]", "'a/{b' has an unclosed '{' alternation"),
    ],
)
def test_invalid_pattern_is_a_diagnostic_at_its_key(
    inputs: tuple[str, ...], outputs: tuple[str, ...], key_path: str, message: str
) -> None:
    """PATH-001..016, CFG-040: a bad pattern is reported with the file, key path and line."""
    ws = workspace(project("web", T(name="t", line=6, inputs=inputs, outputs=outputs)))
    with pytest.raises(GraphError) as caught:
        build_graph(ws)
    assert caught.value.diagnostics == (
        Diagnostic(file="packages/web/haz.yml", key_path=key_path, line=6, message=message),
    )


# --- DAG-011 everything at once --------------------------------------------------------------


def test_every_problem_is_reported_together() -> None:
    """DAG-011: a bad reference, a self reference, a collision and a cycle in one GraphError,
    sorted by file and line (workspace-wide cycles first)."""
    ws = workspace(
        project(
            "a", T(name="x", line=2, deps=("b:x", "nope:x")), T(name="y", line=9, weak=("~:y",))
        ),
        project("b", T(name="x", line=4, deps=("a:x",), outputs=("/o.txt",))),
        project("c", T(name="x", line=1, outputs=("/o.txt", "../up"))),
    )
    with pytest.raises(GraphError) as caught:
        build_graph(ws)
    rendered = [d.render() for d in caught.value.diagnostics]
    assert rendered == [
        "<workspace>: dependency cycle (over deps, weakDeps and output→input producer edges) "
        "among a:x, b:x",
        "packages/a/haz.yml:4: tasks.x.deps[1]: task reference 'nope:x' of a:x resolves to "
        "nothing: there is no project 'nope'",
        "packages/a/haz.yml:10: tasks.y.weakDeps[0]: task a:y depends on itself through '~:y'",
        "packages/b/haz.yml:4: tasks.x.outputs[0]: output '/o.txt' is declared by several "
        "tasks: b:x, c:x",
        "packages/c/haz.yml:1: tasks.x.outputs[1]: '../up' has a '..' segment; '.' and '..' "
        "are not allowed (PATH)",
    ]
    assert str(caught.value).startswith("5 configuration errors:\n  <workspace>: dependency")


def test_bad_overlay_pattern_is_reported_once_for_all_attached_projects() -> None:
    """DAG-011, CFG-040: a pattern error in an overlay task is one diagnostic in the overlay
    file, however many projects the task is attached to."""
    ws = workspace(
        project("a", tags=("ts",)),
        project("b", tags=("ts",)),
        overlays=(overlay("lint", ("ts",), T(name="lint", line=2, inputs=("src/../x",))),),
    )
    with pytest.raises(GraphError) as caught:
        build_graph(ws)
    assert [d.render() for d in caught.value.diagnostics] == [
        ".haz/tasks/lint.yml:2: tasks.lint.inputs[0]: 'src/../x' has a '..' segment; '.' and "
        "'..' are not allowed (PATH)"
    ]
