"""Warnings for input patterns that contribute no file (PATH-001..016 as amended)."""

from __future__ import annotations

from pathlib import Path

from hazremote.keys.resolve import UnmatchedReason, unmatched_warnings
from tests.keys.keykit import make_task, open_deriver, write


def _root(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    write(root, "lib/src/a.c", "a")
    write(root, "lib/build/x.o", "o")
    return root


def test_glob_matching_no_file_is_reported(tmp_path: Path) -> None:
    """PATH: a glob that matches nothing is a finding naming the task and the pattern."""
    task = make_task(inputs=["src/**/*.c", "include/**/*.h"])
    with open_deriver(_root(tmp_path)) as deriver:
        deriver.inputs(task)
        found = deriver.unmatched_inputs()
    assert [(f.pattern.text, f.reason) for f in found] == [
        ("include/**/*.h", UnmatchedReason.NO_MATCH)
    ]
    assert found[0].message() == "task lib:build: input 'include/**/*.h' matches no file"


def test_input_swallowed_by_own_outputs_is_reported(tmp_path: Path) -> None:
    """PATH, issue 12 #1: `build/x.o` under the task's own `build/**` is wholly excluded."""
    task = make_task(inputs=["src/**", "build/x.o", "build/*.o"], outputs=["build/**"])
    with open_deriver(_root(tmp_path)) as deriver:
        assert [f.path for f in deriver.inputs(task)] == ["/lib/src/a.c"]
        messages = [f.message() for f in deriver.unmatched_inputs()]
    assert messages == [  # in declaration order
        "task lib:build: input 'build/x.o' is wholly excluded by the task's own outputs "
        "('build/**')",
        "task lib:build: input 'build/*.o' is wholly excluded by the task's own outputs "
        "('build/**')",
    ]


def test_negations_excluding_everything_are_not_reported(tmp_path: Path) -> None:
    """Decision: what a `!` input excludes was asked for; `!` patterns are never reported."""
    task = make_task(inputs=["src/**", "!src/**", "!nothing/**"])
    with open_deriver(_root(tmp_path)) as deriver:
        assert deriver.inputs(task) == ()
        assert deriver.unmatched_inputs() == ()


def test_control_dir_literal_is_reported(tmp_path: Path) -> None:
    """PATH: a literal under .haz/ is dropped; say so."""
    task = make_task(inputs=["/.haz/workspace.yml"])
    with open_deriver(_root(tmp_path)) as deriver:
        deriver.inputs(task)
        (found,) = deriver.unmatched_inputs()
    assert found.reason is UnmatchedReason.CONTROL_DIR


def test_finding_disappears_once_a_predecessor_produced_the_file(tmp_path: Path) -> None:
    """The run reports each task's latest resolution: a glob empty at prefetch but filled by
    a predecessor before the task's key is derived is not reported."""
    root = _root(tmp_path)
    gen = make_task(name="gen", inputs=[], outputs=["gen/**"])
    task = make_task(name="use", inputs=["gen/*.c"])
    with open_deriver(root) as deriver:
        deriver.prefetch([gen, task])
        assert len(deriver.unmatched_inputs()) == 1
        write(root, "lib/gen/g.c", "g")
        deriver.outputs_written(gen.outputs)
        deriver.inputs(task)
        assert deriver.unmatched_inputs() == ()


def test_check_mode_matches_without_hashing_and_reports_missing_literals(
    tmp_path: Path,
) -> None:
    """`haz check`: a missing literal is "matches no file"; no file is hashed."""
    task = make_task(inputs=["src/a.c", "src/missing.c"])
    with open_deriver(_root(tmp_path)) as deriver:
        found = deriver.resolver.check_unmatched([task])
    assert [(f.pattern.text, f.reason) for f in found] == [
        ("src/missing.c", UnmatchedReason.NO_MATCH)
    ]


def test_no_match_is_not_warned_when_another_task_produces_it(tmp_path: Path) -> None:
    """Decision: a pattern another task's outputs overlap may be written later: no warning."""
    gen = make_task(name="gen", inputs=[], outputs=["gen/**"])
    use = make_task(name="use", inputs=["gen/*.c", "nope/*.c"])
    with open_deriver(_root(tmp_path)) as deriver:
        found = deriver.resolver.check_unmatched([use])
    tasks = {gen.id: gen, use.id: use}
    warnings = unmatched_warnings(found, tasks=tasks, producers={use.id: (gen.id,)})
    assert warnings == ["task lib:use: input 'nope/*.c' matches no file"]
