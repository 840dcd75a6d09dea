"""Issue 12 wrong result #3 end to end, with real ``haz`` processes on git workspaces.

Spec coverage (PATH-001..016 as amended): a task without an ``inputs`` key hashes its
project's files (git tracked + untracked-not-ignored), ``inputs: []`` means none, input
patterns that contribute no file are warned about by ``haz run`` (once per run) and
``haz check``; EXEC-026 ``--git-changed`` selects a task with default inputs.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.run.conftest import HazRunner, WorkspaceMaker, py
from tests.support.workspaces import write_files

GIT = ["git", "-c", "user.email=t@haz", "-c", "user.name=t", "-c", "init.defaultBranch=main"]

# reads every source it finds and writes one output: what a real build's key must follow
BUILD = py(
    "import pathlib;"
    "src = b''.join(p.read_bytes() for p in sorted(pathlib.Path('src').glob('*.c')));"
    "pathlib.Path('build').mkdir(exist_ok=True);"
    "pathlib.Path('build/libx.a').write_bytes(src);"
    "pathlib.Path('gen').mkdir(exist_ok=True);"
    "pathlib.Path('gen/version.h').write_text('#define V 1\\n');"
    "print('built', len(src))"
)
TEST = py("import pathlib; print('tested', pathlib.Path('build/libx.a').read_bytes())")


def _git(root: Path, *args: str) -> None:
    subprocess.run([*GIT, *args], cwd=root, check=True, capture_output=True)


def _workspace(make_workspace: WorkspaceMaker) -> Path:
    root: Path = make_workspace(
        {
            ".haz/workspace.yml": "projects: [lib, tools]\n",
            ".gitignore": ".haz/cache/\n.haz/state/\n.haz/tmp/\nbuild/\n*.log\n",
            "lib/haz.yml": (
                "tasks:\n"
                "  build:\n"
                f"    command: {BUILD}\n"
                "    outputs: [build/**, gen/**]\n"
                "  test:\n"
                f"    command: {TEST}\n"
                "    deps: [~:build]\n"
                "  stamp:\n"
                f"    command: {py('print(1)')}\n"
                "    inputs: []\n"
            ),
            "lib/src/a.c": "int a;\n",
            "tools/haz.yml": f"tasks:\n  fmt:\n    command: {py('print(2)')}\n",
            "tools/t.py": "x = 1\n",
        }
    )
    _git(root, "init", "-q")
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "init")
    return root


def test_task_without_inputs_reruns_after_a_source_edit(
    haz: HazRunner, make_workspace: WorkspaceMaker
) -> None:
    """The complaint: a task without `inputs` used to hash nothing and stay a hit after its
    sources changed; now editing a project file re-runs it, `inputs: []` stays cached, and
    neither an ignored file nor another project's file matters."""
    root = _workspace(make_workspace)
    first = haz("run", "--workspace", cwd=root)
    assert first.code == 0, first.stderr
    again = haz("run", "--workspace", cwd=root)
    assert again.code == 0, again.stderr
    assert set(again.sources().values()) == {"local-cache"}  # stable: own outputs excluded

    (root / "lib" / "debug.log").write_text("ignored by git\n")
    (root / "tools" / "t.py").write_text("x = 2\n")
    ignored = haz("run", "lib:build", "lib:stamp", cwd=root)
    assert ignored.sources() == {"lib:build": "local-cache", "lib:stamp": "local-cache"}

    write_files(root, {"lib/src/a.c": "int a = 2;\n", "lib/src/b.c": "int b;\n"})
    edited = haz("run", "lib:test", "lib:stamp", cwd=root)
    assert edited.code == 0, edited.stderr
    assert edited.sources() == {
        "lib:build": "fresh",
        "lib:test": "fresh",  # its inputs (the project's files) changed too
        "lib:stamp": "local-cache",
    }
    assert "int b;" in edited.out


def test_untracked_output_of_a_predecessor_is_a_dependant_input(
    haz: HazRunner, make_workspace: WorkspaceMaker
) -> None:
    """`gen/version.h` (written by lib:build, not ignored) is an input of lib:test; the
    ignored `build/libx.a` is not."""
    root = _workspace(make_workspace)
    assert haz("run", "lib:test", cwd=root).code == 0
    why = haz("why", "lib:test", cwd=root)
    assert why.code == 0, why.stderr
    assert "/lib/gen/version.h" in why.out
    assert "/lib/build/libx.a" not in why.out
    assert "/lib/src/a.c" in why.out
    assert "/tools/t.py" not in why.out


def test_unmatched_patterns_are_warned_once_per_run_and_by_check(
    haz: HazRunner, make_workspace: WorkspaceMaker
) -> None:
    """PATH warnings name the task and the pattern: once per run (not per dependant) on
    stderr, and from `haz check` (exit 0)."""
    root = make_workspace(
        {
            ".haz/workspace.yml": "projects: [lib]\n",
            "lib/haz.yml": (
                "tasks:\n"
                "  build:\n"
                f"    command: {py('print(1)')}\n"
                "    inputs: ['src/**/*.c', 'include/**/*.h', build/x.o]\n"
                "    outputs: ['build/**']\n"
                "  t1:\n"
                f"    command: {py('print(2)')}\n"
                "    inputs: []\n"
                "    deps: [~:build]\n"
                "  t2:\n"
                f"    command: {py('print(3)')}\n"
                "    inputs: []\n"
                "    deps: [~:build]\n"
            ),
            "lib/src/a.c": "int a;\n",
        }
    )
    no_match = "task lib:build: input 'include/**/*.h' matches no file"
    swallowed = (
        "task lib:build: input 'build/x.o' is wholly excluded by the task's own outputs "
        "('build/**')"
    )
    run = haz("run", "lib:t1", "lib:t2", cwd=root)
    assert run.code == 0, run.stderr
    assert run.stderr.count(no_match) == 1
    assert run.stderr.count(swallowed) == 1
    assert "src/**/*.c" not in run.stderr

    check = haz("check", "--workspace", cwd=root)
    assert check.code == 0
    assert no_match in check.stderr
    assert swallowed in check.stderr


def test_git_changed_selects_a_task_with_default_inputs(
    haz: HazRunner, make_workspace: WorkspaceMaker
) -> None:
    """EXEC-026/029: a changed file under the project directory matches a task without
    `inputs`; a file of another project does not."""
    root = _workspace(make_workspace)
    (root / "tools" / "t.py").write_text("x = 3\n")
    dry = haz("run", "--workspace", "--git-changed", "--dry-run", cwd=root)
    assert dry.code == 0, dry.stderr
    selected = {line.split()[0] for line in dry.out.splitlines() if line.strip()}
    assert selected == {"tools:fmt"}
