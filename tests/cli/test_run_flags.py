"""``haz run --dry-run[=json]``: the format comes only from ``=``, never from the next word.

Spec coverage:
* SPEC §5 — the spellings ``--dry-run`` and ``--dry-run=json`` keep working.
* EXEC-030 — ``haz run --dry-run tests:test`` dry-runs ``tests:test`` (the word after the flag is
  a target, not the flag's value).
* EXEC-021 — an unknown format is a usage error (exit 2) naming the flag.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hazremote.cli.main import build_parser, main
from tests.support.workspaces import write_files


@pytest.mark.parametrize(
    ("argv", "dry_run", "targets"),
    [
        (["--dry-run", "tests:test"], "plain", ["tests:test"]),
        (["tests:test", "--dry-run"], "plain", ["tests:test"]),
        (["--dry-run=json", "tests:test"], "json", ["tests:test"]),
        (["--dry-run=plain", "a:b", "c:d"], "plain", ["a:b", "c:d"]),
        (["--dry-run", "json"], "plain", ["json"]),
        (["--workspace"], None, []),
    ],
)
def test_dry_run_takes_a_format_only_after_an_equals_sign(
    argv: list[str], dry_run: str | None, targets: list[str]
) -> None:
    args = build_parser().parse_args(["run", *argv])
    assert (args.dry_run, args.targets) == (dry_run, targets)


def test_an_unknown_dry_run_format_is_a_usage_error_naming_the_flag(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["run", "--dry-run=xml"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--dry-run" in err
    assert "'xml'" in err
    assert "--dry-run=json" in err


def test_usage_shows_the_optional_value_spelling(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert "[--dry-run[=json]]" in capsys.readouterr().out


@pytest.fixture
def two_projects(tmp_path: Path) -> Path:
    return write_files(
        tmp_path,
        {
            ".haz/workspace.yml": "projects: [lib, tests]\n",
            "lib/haz.yml": "tasks:\n  build: {command: [make], inputs: []}\n",
            "tests/haz.yml": (
                "tasks:\n  test: {command: [make], inputs: [], deps: [lib:build]}\n"
                "  lint: {command: [make], inputs: []}\n"
            ),
        },
    )


def test_dry_run_followed_by_a_target_dry_runs_that_target(
    two_projects: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """EXEC-030 with the issue's command line: exit 0 and the target's run set only."""
    monkeypatch.chdir(two_projects)
    assert main(["run", "--dry-run", "tests:test"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["lib:build", "tests:test"]
    assert main(["run", "--dry-run=json", "tests:test"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [entry["task"] for entry in data] == ["lib:build", "tests:test"]


def test_dry_run_with_a_spaced_format_says_to_write_the_equals_sign(
    two_projects: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(two_projects)
    assert main(["run", "--dry-run", "json"]) == 2
    err = capsys.readouterr().err
    assert "'json'" in err
    assert "--dry-run=json" in err
