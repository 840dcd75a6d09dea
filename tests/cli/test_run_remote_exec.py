"""``haz run --remote-exec``: flags reach the run; ``never`` changes nothing (RX-001).

Spec coverage: RX-001 — ``--remote-exec never`` is byte-identical to a run without it; a
policy other than ``never`` without a remote is a usage error (exit 2) naming the flag.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from hazremote.cli.main import build_parser, main
from tests.support.workspaces import write_files


def test_the_flags_parse() -> None:
    args = build_parser().parse_args(["run", "--remote-exec", "auto", "--remote-jobs", "6"])
    assert (args.remote_exec, args.remote_jobs) == ("auto", 6)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    return write_files(
        tmp_path,
        {
            ".haz/workspace.yml": "projects: [app]\n",
            "app/haz.yml": (
                "tasks:\n"
                "  build:\n"
                "    shell: 'echo out; echo err >&2; mkdir -p dist; echo x > dist/a'\n"
                "    inputs: []\n"
                "    outputs: [dist/**]\n"
                "    remote: always\n"
            ),
        },
    )


def _run(
    root: Path, extra: list[str], capsys: pytest.CaptureFixture[str], name: str
) -> tuple[int, str, str, dict[str, object]]:
    summary = root / f"{name}.json"
    code = main(["run", "app:build", "--no-cache", "--summary-json", str(summary), *extra])
    captured = capsys.readouterr()
    document = json.loads(summary.read_text())
    document.pop("duration_ms", None)
    for task in document.get("tasks", []):
        task.pop("duration_ms", None)
    timeless = re.sub(r"\b[0-9.]+m?s\b", "T", captured.err)  # durations differ run to run
    return code, captured.out, timeless, document


def test_remote_exec_never_is_identical_to_a_run_without_it(
    workspace: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(workspace)
    monkeypatch.delenv("HAZ_REMOTE_EXEC", raising=False)
    plain = _run(workspace, ["--output", "buffered"], capsys, "plain")
    never = _run(workspace, ["--output", "buffered", "--remote-exec", "never"], capsys, "never")
    assert plain[0] == 0
    assert never == plain
    assert (workspace / "app" / "dist" / "a").read_text() == "x\n"


def test_remote_exec_without_a_remote_is_a_usage_error(
    workspace: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(workspace)
    monkeypatch.delenv("HAZ_REMOTE_URL", raising=False)
    assert main(["run", "app:build", "--remote-exec", "auto"]) == 2
    assert "--remote-exec auto needs a remote" in capsys.readouterr().err
