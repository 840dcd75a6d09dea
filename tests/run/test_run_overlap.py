"""Overlapping outputs end to end (issue 12, wrong result #1): real ``haz`` processes.

Spec coverage:
* DAG-016 — ``haz check`` warns about output patterns of two tasks overlapping by literal
  prefix (both tasks and patterns named, exit 0) and rejects one literal output path declared
  by two tasks (exit 2, both tasks named); ``haz run`` prints the warnings once, before the run.
* EXEC-020 — no restore and no run replaces a file another task of the same run materialised:
  the refusal comes before anything is renamed into place or spawned, and names both tasks
  and the path; admission stops and tasks not started are skipped ``output-overlap``.
* EXEC-021 — a runtime violation exits 1, and says why on stderr.
* EXEC-040/041 — the epilogue names each skip cause; the summary JSON records them.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

from tests.run.conftest import HazRunner, WorkspaceMaker, py

#: A's command: "compile" src/x.c into build/x.o and archive it into build/libx.a.
_BUILD = py(
    "import os; os.makedirs('build', exist_ok=True); src = open('src/x.c').read();"
    "open('build/x.o', 'w').write('obj:' + src); open('build/libx.a', 'w').write('lib:' + src)"
)
#: B's command: pack what A built (it declares the whole of build/ as its outputs).
_PACK = py(
    "import os; os.makedirs('build', exist_ok=True);"
    "open('build/pack.txt', 'w').write('pack:' + open('build/x.o').read())"
)
_NOOP = py("pass")


def _issue_workspace(make_workspace: WorkspaceMaker) -> Path:
    """The issue's project: B (`pack`) has `outputs: [build/**]`, depends on A (`build`),
    which writes build/libx.a, and lists build/x.o as an input; `check` depends on B and
    `docs` is independent (so the run has a task not yet started when B is refused)."""
    return make_workspace(
        {
            ".haz/workspace.yml": "projects: [lib]\nconcurrency: {default: 1}\n",
            "lib/haz.yml": (
                "tasks:\n"
                f"  build: {{command: {_BUILD}, inputs: [src/x.c],"
                " outputs: [build/x.o, build/libx.a]}\n"
                f"  pack: {{command: {_PACK}, deps: [~:build], inputs: [build/x.o],"
                " outputs: ['build/**']}\n"
                f"  test: {{command: {_NOOP}, deps: [~:pack]}}\n"
                f"  zdocs: {{command: {_NOOP}}}\n"
            ),
            "lib/src/x.c": "int x = 1;\n",
        }
    )


def test_a_stale_entry_of_an_overlapping_task_never_overwrites_a_fresh_output(
    haz: HazRunner, make_workspace: WorkspaceMaker
) -> None:
    """Issue 12 #1, EXEC-020/021: after A's source changes, `haz run` of B rebuilds A and
    must not restore B's old entry over A's fresh build/libx.a; it exits 1 saying why."""
    root = _issue_workspace(make_workspace)
    lib = root / "lib"
    haz("run", "lib:test", "lib:zdocs", cwd=root)  # whatever it decides, then A changes:
    (lib / "src" / "x.c").write_text("int x = 2;\n")

    result = haz("run", "lib:test", "lib:zdocs", cwd=root)

    assert (lib / "build" / "libx.a").read_text() == "lib:int x = 2;\n"  # A's fresh output
    assert (lib / "build" / "x.o").read_text() == "obj:int x = 2;\n"
    assert result.code == 1
    message = "output overlap: lib/build/libx.a is materialised by both lib:build and lib:pack"
    assert message in result.stderr
    assert result.task("lib:build")["state"] == "succeeded"
    pack = result.task("lib:pack")
    assert pack["state"] == "failed"
    assert message in str(pack["error"])
    assert result.task("lib:test")["skip_cause"] == {
        "kind": "output-overlap",
        "upstream": "lib:pack",
    }
    assert result.task("lib:zdocs")["skip_cause"] == {
        "kind": "output-overlap",
        "upstream": "lib:pack",
    }
    assert "2 skipped (2 output-overlap: lib:pack)" in result.stderr


def test_a_restore_is_refused_before_it_replaces_another_tasks_fresh_file(
    haz: HazRunner, make_workspace: WorkspaceMaker
) -> None:
    """EXEC-020: `b` has a cache entry holding out/x.txt; in a run where `a` (admitted
    first) wrote out/x.txt, that entry is not restored over it, and `b` fails naming both."""
    write_a = py("import os; os.makedirs('out', exist_ok=True); open('out/x.txt', 'w').write('a')")
    write_b = py("import os; os.makedirs('out', exist_ok=True); open('out/x.txt', 'w').write('b')")
    root = make_workspace(
        {
            ".haz/workspace.yml": "concurrency: {default: 1}\n",
            "haz.yml": (
                f"tasks:\n  a: {{command: {write_a}, outputs: [out/x.txt], cache: false}}\n"
                f"  b: {{command: {write_b}, outputs: ['out/*.txt']}}\n"
                f"  c: {{command: {_NOOP}}}\n"
            ),
        }
    )
    assert haz("run", "b", cwd=root).code == 0  # b's entry now holds out/x.txt = "b"

    result = haz("run", "a", "b", "c", cwd=root)

    assert (root / "out" / "x.txt").read_text() == "a"
    assert result.code == 1
    assert "output overlap: out/x.txt is materialised by both root:a and root:b" in result.stderr
    assert result.task("root:b")["state"] == "failed"
    assert result.task("root:b")["source"] is None
    assert result.task("root:c")["skip_cause"] == {"kind": "output-overlap", "upstream": "root:b"}


def test_a_fresh_task_whose_outputs_would_claim_another_tasks_file_is_not_spawned(
    haz: HazRunner, make_workspace: WorkspaceMaker, tmp_path: Path
) -> None:
    """EXEC-020: `b`'s output glob matches the file `a` materialised, so running `b` would
    make it `b`'s output too: `b` is refused before its process starts."""
    marker = tmp_path / "b-ran"
    write_a = py("import os; os.makedirs('out', exist_ok=True); open('out/x.txt', 'w').write('a')")
    write_b = py(f"open({str(marker)!r}, 'w').write('ran')")
    root = make_workspace(
        {
            ".haz/workspace.yml": "concurrency: {default: 1}\n",
            "haz.yml": (
                f"tasks:\n  a: {{command: {write_a}, outputs: ['out/*.txt']}}\n"
                f"  b: {{command: {write_b}, outputs: ['out/**']}}\n"
            ),
        }
    )
    result = haz("run", "a", "b", cwd=root)
    assert result.code == 1
    assert not marker.exists()
    assert "output overlap: out/x.txt is materialised by both root:a and root:b" in result.stderr
    assert result.task("root:b")["state"] == "failed"


def test_check_warns_about_overlapping_output_patterns(
    haz: HazRunner, make_workspace: WorkspaceMaker
) -> None:
    """DAG-016: a warning on stderr naming both tasks and both patterns; still exit 0."""
    root = _issue_workspace(make_workspace)
    result = haz("check", "--workspace", cwd=root)
    assert result.code == 0, result.stderr
    assert "4 task(s) validated." in result.out
    warnings = [
        line
        for line in result.stderr.splitlines()
        if "warning" in line and "lib:build" in line and "lib:pack" in line
    ]
    assert len(warnings) == 2, result.stderr  # build/x.o and build/libx.a each overlap
    for pattern in ("build/x.o", "build/libx.a"):
        assert any(
            "lib:build" in w and "lib:pack" in w and f"'{pattern}'" in w and "'build/**'" in w
            for w in warnings
        ), result.stderr


def test_run_prints_the_overlap_warnings_once_before_the_run(
    haz: HazRunner, make_workspace: WorkspaceMaker
) -> None:
    """DAG-016: `haz run` shows the graph's warnings for the tasks it runs, once, first."""
    root = _issue_workspace(make_workspace)
    result = haz("run", "lib:build", cwd=root)
    lines = result.stderr.splitlines()
    warned = [
        i
        for i, line in enumerate(lines)
        if "warning" in line and "lib:build" in line and "'build/**'" in line
    ]
    assert len(warned) == 2, result.stderr
    finished = next(i for i, line in enumerate(lines) if "lib:build" in line and "✓" in line)
    assert max(warned) < finished
    # A second run (the workspace snapshot is reused) warns again, still once per overlap.
    again = haz("run", "lib:build", cwd=root)
    assert sum("lib:build" in ln and "'build/**'" in ln for ln in again.stderr.splitlines()) == 2


def test_check_rejects_one_literal_output_declared_by_two_tasks(
    haz: HazRunner, make_workspace: WorkspaceMaker
) -> None:
    """DAG-016: the same literal output path in two tasks is a config error (exit 2)."""
    root = make_workspace(
        {
            ".haz/workspace.yml": "",
            "haz.yml": (
                f"tasks:\n  a: {{command: {_NOOP}, outputs: [out/x.txt]}}\n"
                f"  b: {{command: {_NOOP}, outputs: [/out/x.txt]}}\n"
            ),
        }
    )
    result = haz("check", cwd=root)
    assert result.code == 2
    assert "'/out/x.txt' is declared by several tasks: root:a, root:b" in result.stderr
    assert haz("run", "a", cwd=root).code == 2


def test_two_tasks_running_at_once_that_write_one_file_fail_the_later_one_unstored(
    haz: HazRunner, make_workspace: WorkspaceMaker, tmp_path: Path
) -> None:
    """EXEC-020, two concurrent writers: nothing holds the path before either finishes, so
    the later to finish is refused when it claims — it fails, naming both, and its result
    (which holds the other's file) is not stored."""
    barrier = tmp_path / "barrier"
    barrier.mkdir()

    def writer(name: str) -> str:
        # Both processes run before either writes: each waits (bounded) for the other.
        return py(
            "import os, pathlib, time\n"
            f"b = pathlib.Path({str(barrier)!r}); (b / {name!r}).touch()\n"
            "deadline = time.monotonic() + 60\n"
            "while len(list(b.iterdir())) < 2 and time.monotonic() < deadline: time.sleep(0.01)\n"
            f"os.makedirs('out', exist_ok=True); open('out/x.txt', 'w').write({name!r})"
        )

    root = make_workspace(
        {
            ".haz/workspace.yml": "concurrency: {default: 2}\n",
            "haz.yml": (
                f"tasks:\n  a: {{command: {writer('a')}, outputs: ['out/*.txt']}}\n"
                f"  b: {{command: {writer('b')}, outputs: [out/x.txt]}}\n"
            ),
        }
    )
    result = haz("run", "a", "b", cwd=root)
    assert result.code == 1
    states = {name: cast(str, result.task(f"root:{name}")["state"]) for name in ("a", "b")}
    assert sorted(states.values()) == ["failed", "succeeded"], result.stderr
    assert "is materialised by both root:" in result.stderr
    loser = next(f"root:{n}" for n, state in states.items() if state == "failed")
    assert "output overlap: out/x.txt" in str(result.task(loser)["error"])
    stored = list((root / ".haz" / "cache").glob("*/*/manifest.json"))
    assert len(stored) == 1  # only the task that claimed first
