"""Reference errors are reported together with syntax and schema errors of the same load.

Spec coverage:
* CFG-040 / DAG-011 — all errors of a load at once: a reference that resolves to nothing in a
  file that parsed is reported beside another file's syntax error, and beside an error of the
  task that holds it, instead of only after those are fixed.
* REF-001..008 — a reference into a project whose file failed to load is not reported (its
  tasks are unknown, so "resolves to nothing" could be false), nor one that could name a
  project that failed to load entirely.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hazremote.cli.main import main
from tests.support.workspaces import write_files

WS = {
    ".haz/workspace.yml": "projects: [core, app, tests]\n",
    "core/haz.yml": "tasks:\n  build: {command: [make]}\n",
    "app/haz.yml": "tasks:\n  build: {command: [make], deps: [core:build]}\n",
    "tests/haz.yml": "tasks:\n  test: {command: [make], deps: [app:build]}\n",
}


def _check(
    root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    monkeypatch.chdir(root)
    code = main(["check", "--workspace"])
    return code, capsys.readouterr().err


def test_a_reference_error_is_reported_with_another_files_syntax_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_files(
        tmp_path,
        {
            **WS,
            "core/haz.yml": "tasks:\n  build: {command: [make]\n  lint: [\n",
            "tests/haz.yml": "tasks:\n  test: {command: [make], deps: [nope:build, app:biuld]}\n",
        },
    )
    code, err = _check(root, monkeypatch, capsys)
    assert code == 2
    assert "3 configuration errors:" in err
    assert "core/haz.yml:" in err
    assert "invalid YAML" in err
    assert "tests/haz.yml:2: tasks.test.deps[0]: task reference 'nope:build'" in err
    assert "tests/haz.yml:2: tasks.test.deps[1]: task reference 'app:biuld'" in err
    assert "did you mean 'build'?" in err


def test_a_reference_error_is_reported_with_an_error_of_its_own_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_files(
        tmp_path,
        {
            **WS,
            "app/haz.yml": "tasks:\n  build:\n    command: [make]\n    deps: [cor:build]\n"
            "    depz: []\n",
        },
    )
    code, err = _check(root, monkeypatch, capsys)
    assert code == 2
    assert "app/haz.yml:5: tasks.build.depz: unknown key 'depz'" in err
    assert "app/haz.yml:4: tasks.build.deps[0]: task reference 'cor:build'" in err
    assert "did you mean 'core'?" in err


def test_no_reference_error_into_a_project_that_failed_to_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """app's file does not parse: app:build's existence is unknown, so no claim is made."""
    root = write_files(tmp_path, {**WS, "app/haz.yml": "tasks: [\n"})
    code, err = _check(root, monkeypatch, capsys)
    assert code == 2
    assert "1 configuration error:" in err
    assert "app/haz.yml" in err
    assert "app:build" not in err


def test_no_unknown_project_error_while_a_project_file_failed_to_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A project whose file does not parse may carry `name: engine`: engine:build stays quiet,
    while a missing task of a project that loaded is still reported."""
    root = write_files(
        tmp_path,
        {
            **WS,
            "app/haz.yml": "name: [\n",
            "tests/haz.yml": "tasks:\n  test: {command: [make], deps: [engine:build, core:lint]}\n",
        },
    )
    code, err = _check(root, monkeypatch, capsys)
    assert code == 2
    assert "engine:build" not in err
    assert "tests/haz.yml:2: tasks.test.deps[1]: task reference 'core:lint'" in err
    assert "2 configuration errors:" in err


def test_a_clean_workspace_still_validates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_files(tmp_path, WS)
    monkeypatch.chdir(root)
    assert main(["check", "--workspace"]) == 0
    assert capsys.readouterr().out == "3 task(s) validated.\n"


def test_no_missing_task_error_while_an_overlay_failed_to_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The broken overlay would give core a `lint`: core:lint is not reported as missing."""
    root = write_files(
        tmp_path,
        {
            **WS,
            "core/haz.yml": "tags: [lib]\ntasks:\n  build: {command: [make]}\n",
            ".haz/tasks/lib.yml": (
                "tagsFilter: [lib]\ntasks:\n  lint: {command: [make], bogus: 1}\n"
            ),
            "tests/haz.yml": "tasks:\n  test: {command: [make], deps: [core:lint]}\n",
        },
    )
    code, err = _check(root, monkeypatch, capsys)
    assert code == 2
    assert "1 configuration error:" in err
    assert ".haz/tasks/lib.yml:3: tasks.lint.bogus: unknown key 'bogus'" in err
