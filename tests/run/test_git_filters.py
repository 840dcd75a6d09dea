"""Git filters across projects, and what no target, ``--all`` and ``--workspace`` mean.

Spec coverage:
* EXEC-026..029 — a change selects the tasks whose inputs match it plus their transitive
  hard dependants, *then* the scope (``--all``/``--workspace``) restricts that selection: a
  dependant in the scope is selected even when the changed task is outside it.
* EXEC-001 — ``haz run --help`` and the no-target error say what no target, ``--all`` and
  ``--workspace`` select.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.run.conftest import HazRunner, WorkspaceMaker, py

NOOP = py("pass")
GIT = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]


def _commit_all(root: Path) -> None:
    subprocess.run([*GIT, "init", "-q", "-b", "main"], cwd=root, check=True)
    (root / ".gitignore").write_text(".haz/*\n!.haz/workspace.yml\n")
    subprocess.run([*GIT, "add", "-A"], cwd=root, check=True)
    subprocess.run([*GIT, "commit", "-qm", "init"], cwd=root, check=True)


@pytest.fixture
def c_repo(make_workspace: WorkspaceMaker) -> Path:
    """The issue's shape: the library at the root, tests and utilities in other projects."""
    root = make_workspace(
        {
            ".haz/workspace.yml": "projects: [., utils, tests]\n",
            "haz.yml": (
                "name: core\ntasks:\n"
                f"  build: {{command: {NOOP}, inputs: [src/**]}}\n"
                f"  lint: {{command: {NOOP}, inputs: [src/**]}}\n"
                f"  test: {{command: {NOOP}, inputs: [check/**], deps: [utils:build]}}\n"
            ),
            "src/core.c": "int core;",
            "check/a.c": "int a;",
            "utils/haz.yml": (
                f"tasks:\n  build: {{command: {NOOP}, inputs: ['*.c'], deps: [core:build]}}\n"
            ),
            "utils/u.c": "int u;",
            "tests/haz.yml": (
                f"tasks:\n  test: {{command: {NOOP}, inputs: ['*.c'], deps: [utils:build]}}\n"
            ),
            "tests/t.c": "int t;",
        }
    )
    _commit_all(root)
    return root


@pytest.mark.parametrize("mode", ["--git-changed", "--git-staged", "--git-changed-since"])
def test_all_at_the_root_selects_dependants_of_a_change_in_another_project(
    haz: HazRunner, c_repo: Path, mode: str
) -> None:
    """EXEC-029: utils/u.c changed → utils:build and its dependants; --all keeps core's."""
    (c_repo / "utils" / "u.c").write_text("int u2;")
    subprocess.run([*GIT, "add", "-A"], cwd=c_repo, check=True)
    flags = [mode, "HEAD"] if mode == "--git-changed-since" else [mode]
    result = haz("run", "--all", *flags, cwd=c_repo)
    assert result.code == 0, result.stderr
    # core:test depends on utils:build: affected, in scope (the root project is core), and
    # it needs utils:build and core:build (EXEC-001). tests:test is affected but out of scope.
    assert sorted(result.sources()) == ["core:build", "core:test", "utils:build"]
    everything = haz("run", "--workspace", *flags, cwd=c_repo)
    assert sorted(everything.sources()) == ["core:build", "core:test", "tests:test", "utils:build"]


def test_all_inside_a_project_selects_it_when_a_predecessor_changed(
    haz: HazRunner, c_repo: Path
) -> None:
    """EXEC-029: in tests/, a change to core's source still selects tests:test."""
    (c_repo / "src" / "core.c").write_text("int core2;")
    result = haz("run", "--all", "--git-changed", cwd=c_repo / "tests")
    assert result.code == 0, result.stderr
    assert sorted(result.sources()) == ["core:build", "tests:test", "utils:build"]


def test_no_target_and_no_default_task_explains_the_choices(haz: HazRunner, c_repo: Path) -> None:
    """EXEC-001: the error says what no target means and what --all / --workspace select."""
    result = haz("run", cwd=c_repo / "tests")
    assert result.code == 2
    assert "no `default` task" in result.stderr
    assert "--all" in result.stderr
    assert "every task of project 'tests'" in result.stderr
    assert "--workspace" in result.stderr
    assert "every task of the workspace" in result.stderr


def test_run_help_says_what_no_target_all_and_workspace_select(
    haz: HazRunner, tmp_path: Path
) -> None:
    """EXEC-001 in words: a newcomer reads the difference in --help."""
    result = haz("run", "--help", cwd=tmp_path)
    assert result.code == 0
    text = " ".join(result.out.split())
    assert "no TARGET" in text
    assert "`default` task" in text
    assert "the project containing the current directory" in text
    assert "every task of the workspace" in text
