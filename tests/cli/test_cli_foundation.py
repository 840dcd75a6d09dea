"""The foundation commands end to end: ``haz check``, ``query``, ``graph``, ``init``.

Spec coverage: SPEC §5 (AUX/QRY command contract), EXEC-021 (exit codes 0/2), CFG-040
(diagnostics reach the user with file, key path and line), DISC-001/007 (discovery and the
bearing project from the working directory), REF (command-line targets).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from hazremote.cli.main import main
from tests.support.workspaces import write_files, write_generated_workspace

REPO = Path(__file__).resolve().parents[2]
ACME = REPO / "examples" / "acme"


@pytest.fixture
def small(tmp_path: Path) -> Path:
    return write_files(
        tmp_path,
        {
            ".haz/workspace.yml": "projects: [libs/*, app]\n",
            "libs/core/haz.yml": (
                "tags: [lib]\ntasks:\n"
                "  build: {command: [make], outputs: [out/core.a]}\n"
                "  lint: {command: [lint]}\n"
            ),
            "libs/util/haz.yml": (
                "tags: [lib, legacy]\ntasks:\n  build: {command: [make], deps: [core:build]}\n"
            ),
            "app/haz.yml": (
                "tags: [frontend]\ntasks:\n"
                "  build:\n    command: [make]\n    deps: ['[lib]:build']\n    weakDeps: [~:lint]\n"
                "  lint: {command: [lint]}\n"
            ),
        },
    )


def run_haz(
    args: list[str], cwd: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    monkeypatch.chdir(cwd)
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_check_counts_every_task_of_the_workspace(
    small: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_haz(["check", "--workspace"], small, monkeypatch, capsys) == (
        0,
        "5 task(s) validated.\n",
        "",
    )


def test_check_counts_the_bearing_projects_tasks(
    small: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """DISC-007: inside libs/core, the bearing project is core (2 tasks)."""
    code, out, _ = run_haz(["check"], small / "libs" / "core", monkeypatch, capsys)
    assert (code, out) == (0, "2 task(s) validated.\n")


def test_check_reports_every_error_with_file_key_and_line(
    small: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (small / "app" / "haz.yml").write_text(
        "tasks:\n  build:\n    command: [make]\n    deps: [nope:build]\n    depz: []\n"
    )
    (small / "libs" / "core" / "haz.yml").write_text("tasks:\n  build: {shell: 1, command: [x]}\n")
    before = sorted(p.relative_to(small) for p in small.rglob("*"))
    code, out, err = run_haz(["check"], small, monkeypatch, capsys)
    assert code == 2
    assert out == ""
    assert "app/haz.yml:5: tasks.build.depz: unknown key 'depz'" in err
    assert "libs/core/haz.yml:2: tasks.build" in err
    assert sorted(p.relative_to(small) for p in small.rglob("*")) == before


def test_check_reports_an_unresolvable_reference(
    small: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (small / "app" / "haz.yml").write_text(
        "tasks:\n  build:\n    command: [make]\n    deps: [nope:build]\n"
    )
    code, _, err = run_haz(["check"], small, monkeypatch, capsys)
    assert code == 2
    assert "app/haz.yml:4: tasks.build.deps[0]" in err
    assert "nope:build" in err


def test_check_without_a_workspace_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_haz(["check"], tmp_path, monkeypatch, capsys)
    assert code == 2
    assert "no workspace found" in err
    assert "haz init" in err


def test_workspace_root_flag_overrides_discovery(
    small: Path,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    code, out, _ = run_haz(
        ["check", "--workspace", "--workspace-root", str(small)], elsewhere, monkeypatch, capsys
    )
    assert (code, out) == (0, "5 task(s) validated.\n")


def test_query_filters_by_tags_with_boolean_expressions(
    small: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_haz(["query", "--tags", "lib&!legacy"], small, monkeypatch, capsys)
    assert (code, out) == (0, "core:build\ncore:lint\n")
    code, out, _ = run_haz(
        ["query", "--tags", "(frontend|legacy)", "--tasks", "build"], small, monkeypatch, capsys
    )
    assert out.splitlines() == ["app:build", "util:build"]


def test_query_json_lists_project_task_tags_and_resolved_deps(
    small: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_haz(
        ["query", "--projects", "app", "--format", "json"], small, monkeypatch, capsys
    )
    rows = json.loads(out)
    assert code == 0
    assert [(r["project"], r["task"]) for r in rows] == [("app", "build"), ("app", "lint")]
    assert rows[0]["tags"] == ["frontend"]
    assert rows[0]["deps"] == ["core:build", "util:build"]
    assert rows[0]["weakDeps"] == ["app:lint"]


def test_query_rejects_a_bad_expression(
    small: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_haz(["query", "--tags", "a&(b"], small, monkeypatch, capsys)
    assert code == 2
    assert "invalid filter expression" in err


def test_graph_dot_styles_soft_edges_dashed(
    small: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_haz(["graph", "--format", "dot"], small, monkeypatch, capsys)
    assert code == 0
    assert '"core:build" -> "app:build";' in out
    assert '"app:lint" -> "app:build" [style=dashed];' in out


def test_graph_mermaid_restricted_to_a_targets_run_set(
    small: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_haz(
        ["graph", "util:build", "--format", "mermaid"], small, monkeypatch, capsys
    )
    assert code == 0
    assert out.splitlines() == [
        "graph LR",
        '  n0["core:build"]',
        '  n1["util:build"]',
        "  n0 --> n1",
    ]


def test_graph_json_has_nodes_and_typed_edges(
    small: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_haz(["graph", "--format", "json"], small, monkeypatch, capsys)
    graph = json.loads(out)
    assert code == 0
    assert len(graph["nodes"]) == 5
    kinds = {(e["from"], e["to"]): e["kind"] for e in graph["edges"]}
    assert kinds[("app:lint", "app:build")] == "soft"
    assert kinds[("util:build", "app:build")] == "hard"


def test_graph_bare_target_outside_a_project_means_every_project(
    small: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """REF: a bare `lint` at the root (no bearing project) is `^:lint`."""
    code, out, _ = run_haz(["graph", "lint", "--format", "json"], small, monkeypatch, capsys)
    assert code == 0
    assert [n["id"] for n in json.loads(out)["nodes"]] == ["app:lint", "core:lint"]


def test_graph_unknown_target_exits_2_naming_it(
    small: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_haz(["graph", "ghost:build"], small, monkeypatch, capsys)
    assert code == 2
    assert "ghost:build" in err


def test_init_without_a_terminal_lists_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    write_files(
        tmp_path,
        {"web/package.json": '{"scripts": {"build": "vite build"}}', "api/go.mod": "module api\n"},
    )
    monkeypatch.setattr(sys, "stdin", open("/dev/null"))  # noqa: SIM115 - closed by pytest
    code, _, err = run_haz(["init"], tmp_path, monkeypatch, capsys)
    assert code == 2
    assert ".haz/workspace.yml" in err
    assert "web/haz.yml" in err
    assert not (tmp_path / ".haz").exists()


def test_init_yes_writes_a_valid_workspace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    write_files(
        tmp_path,
        {
            "web/package.json": '{"scripts": {"build": "vite build", "test": "vitest"}}',
            "api/go.mod": "module api\n",
            "node_modules/x/package.json": "{}",
        },
    )
    code, _, _ = run_haz(["init", "--yes"], tmp_path, monkeypatch, capsys)
    assert code == 0
    assert 'projects: ["api", "web"]' in (tmp_path / ".haz" / "workspace.yml").read_text()
    assert "cache/" in (tmp_path / ".haz" / ".gitignore").read_text()
    code, out, _ = run_haz(["query", "--format", "plain"], tmp_path, monkeypatch, capsys)
    assert (code, out) == (0, "web:build\nweb:test\n")


def test_init_refuses_to_overwrite(
    small: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    before = (small / ".haz" / "workspace.yml").read_text()
    code, _, err = run_haz(["init", "--yes"], small, monkeypatch, capsys)
    assert code == 2
    assert "already exists" in err
    assert (small / ".haz" / "workspace.yml").read_text() == before


@pytest.mark.parametrize("command", ["check", "query", "graph", "init"])
def test_every_command_has_help_with_examples(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "examples:" in capsys.readouterr().out


def test_generated_workspace_of_2000_tasks_validates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    write_generated_workspace(tmp_path, projects=400, tasks_per_project=5, rng=random.Random(3))
    code, out, _ = run_haz(["check", "--workspace"], tmp_path, monkeypatch, capsys)
    assert (code, out) == (0, "2000 task(s) validated.\n")
    code, out, _ = run_haz(
        ["graph", "p0399:package", "--format", "json"], tmp_path, monkeypatch, capsys
    )
    nodes = [n["id"] for n in json.loads(out)["nodes"]]
    own = [n for n in nodes if n.startswith("p0399:")]
    assert own == [f"p0399:{t}" for t in ("build", "lint", "package", "test", "typecheck")]
    assert all(n.endswith(":build") for n in nodes if n not in own)  # EXEC-001: hard preds only
    assert nodes == sorted(nodes)


def test_the_installed_haz_binary_checks_the_bundled_example() -> None:
    """The real console script, as a subprocess, on examples/acme (the README's demo)."""
    haz = Path(sys.executable).parent / "haz"
    result = subprocess.run(
        [str(haz), "check", "--workspace"], cwd=ACME, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "14 task(s) validated.\n"
    version = subprocess.run([str(haz), "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith("haz ")


def test_the_installed_haz_worker_asks_for_its_required_flags() -> None:
    """RX: the real ``haz-worker`` console script; without flags it is a usage error (exit 2)."""
    result = subprocess.run(
        [str(Path(sys.executable).parent / "haz-worker")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "the following arguments are required: --server, --slots" in result.stderr
