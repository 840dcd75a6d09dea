"""``haz run`` end to end: the cache makes hits indistinguishable from fresh runs.

Spec coverage: CACHE-006 (a missing literal input fails the task, exit 1, dependants
`upstream-errored`), CACHE-007 (predecessor output flows into keys), CACHE-018 (success-only,
`--force`, `--no-cache`, `cache: false`), CACHE-019/023 (restored outputs and replayed
streams are byte-identical, modes kept), EXEC-017 (replay through the same output path),
EXEC-030 (`--dry-run`), EXEC-041 (summary JSON), EXEC-021 (exit codes), CACHE-010
(`HAZ_CACHE_DIR`).
"""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path
from typing import Any, cast

from tests.run.conftest import HazRunner, WorkspaceMaker, py
from tests.support.workspaces import write_files

BUILD = py(
    "import os, sys, pathlib;"
    "src = pathlib.Path('src/main.txt').read_bytes();"
    "out = pathlib.Path('dist'); out.mkdir(exist_ok=True);"
    "(out / 'app.bin').write_bytes(src.upper() + bytes([0xff, 0xfe, 0]));"
    "(out / 'run.sh').write_text('#!/bin/sh\\necho hi\\n'); os.chmod(out / 'run.sh', 0o755);"
    "sys.stdout.buffer.write(b'built \\xff\\xfe invalid utf8\\npartial');"
    "sys.stderr.write('a warning\\n')"
)


READ_LIB = py("print(open('../lib/dist/app.bin', 'rb').read())")


def lib_workspace(make_workspace: WorkspaceMaker) -> Path:
    return make_workspace(
        {
            ".haz/workspace.yml": "projects: [lib, app]\n",
            "lib/haz.yml": (
                "tasks:\n"
                "  build:\n"
                f"    command: {BUILD}\n"
                "    inputs: [src/**]\n"
                "    outputs: [dist/**]\n"
            ),
            "lib/src/main.txt": "hello\n",
            "app/haz.yml": (
                "tasks:\n"
                "  build:\n"
                f"    command: {READ_LIB}\n"
                "    inputs: [/lib/dist/app.bin]\n"
                "    deps: [lib:build]\n"
            ),
        }
    )


def test_second_run_restores_everything_byte_for_byte(
    haz: HazRunner, make_workspace: WorkspaceMaker
) -> None:
    """CACHE-023: outputs, modes, stdout and stderr of a hit equal the fresh run's."""
    root = lib_workspace(make_workspace)
    first = haz("run", "--workspace", "--output", "buffered", cwd=root)
    assert first.code == 0, first.stderr
    assert first.sources() == {"app:build": "fresh", "lib:build": "fresh"}
    files = {p: p.read_bytes() for p in (root / "lib" / "dist").iterdir()}
    modes = {p: stat.S_IMODE(p.stat().st_mode) for p in files}
    for path in files:
        path.unlink()

    second = haz("run", "--workspace", "--output", "buffered", cwd=root)
    assert second.code == 0, second.stderr
    assert second.sources() == {"app:build": "local-cache", "lib:build": "local-cache"}
    assert second.stdout == first.stdout
    assert b"built \xff\xfe invalid utf8\npartial" in second.stdout
    assert {p: p.read_bytes() for p in files} == files
    assert {p: stat.S_IMODE(p.stat().st_mode) for p in files} == modes
    assert modes[root / "lib" / "dist" / "run.sh"] == 0o755
    assert "◉ lib:build (cached)" in second.stderr
    assert "Tasks: 2 succeeded (2 cached)" in second.stderr


def test_live_mode_prefixes_lines_and_flushes_the_partial_last_line(
    haz: HazRunner, make_workspace: WorkspaceMaker
) -> None:
    """EXEC-016/017: the same prefixed bytes fresh and from the cache."""
    root = lib_workspace(make_workspace)
    first = haz("run", "lib:build", cwd=root)
    second = haz("run", "lib:build", cwd=root)
    expected = b"[lib:build] built \xff\xfe invalid utf8\n[lib:build] partial\n"
    assert first.stdout == expected
    assert second.stdout == expected
    assert "[lib:build] a warning" in second.stderr


def test_changing_an_input_reruns_the_task_and_its_dependants(
    haz: HazRunner, make_workspace: WorkspaceMaker
) -> None:
    """CACHE-006: a changed input changes the key; the dependant reads the new output file."""
    root = lib_workspace(make_workspace)
    assert haz("run", "--workspace", cwd=root).code == 0
    (root / "lib" / "src" / "main.txt").write_text("changed\n")
    result = haz("run", "--workspace", cwd=root)
    assert result.sources() == {"app:build": "fresh", "lib:build": "fresh"}
    assert b"CHANGED" in result.stdout


def test_an_edited_haz_yml_is_seen_by_the_next_run_despite_the_workspace_snapshot(
    haz: HazRunner, make_workspace: WorkspaceMaker
) -> None:
    """hazremote.config.snapshot: the second run is served by the snapshot; an edit to a
    command (and a project added) after that is seen by the third."""
    root = lib_workspace(make_workspace)
    time.sleep(0.03)  # past the racy tick of the files just written
    assert haz("run", "--workspace", cwd=root).code == 0
    assert (root / ".haz/state/workspace.snapshot").is_file()
    assert haz("run", "--workspace", cwd=root).sources() == {
        "app:build": "local-cache",
        "lib:build": "local-cache",
    }
    (root / "app/haz.yml").write_text(
        (root / "app/haz.yml").read_text().replace("print(open", "print('edited', open")
    )
    write_files(root, {"extra/haz.yml": f"tasks:\n  build:\n    command: {py('print(7)')}\n"})
    (root / ".haz/workspace.yml").write_text("projects: [lib, app, extra]\n")
    third = haz("run", "--workspace", cwd=root)
    assert third.code == 0, third.stderr
    assert third.sources() == {
        "app:build": "fresh",
        "extra:build": "fresh",
        "lib:build": "local-cache",
    }
    assert b"edited" in third.stdout


def test_failed_runs_are_never_stored(haz: HazRunner, make_workspace: WorkspaceMaker) -> None:
    """CACHE-018: a non-zero exit is not cached; the next run runs it again."""
    root = make_workspace(
        {
            ".haz/workspace.yml": "",
            "haz.yml": f"tasks:\n  t:\n    command: {py('import sys; print(1); sys.exit(3)')}\n",
        }
    )
    first = haz("run", "t", cwd=root)
    second = haz("run", "t", cwd=root)
    assert (first.code, second.code) == (1, 1)
    assert second.task("root:t")["source"] == "fresh"
    assert second.task("root:t")["exit_code"] == 3
    assert "✗ root:t (exit 3)" in second.stderr


def test_force_and_no_cache_and_cache_false(haz: HazRunner, make_workspace: WorkspaceMaker) -> None:
    """CACHE-018: --force runs but stores; --no-cache neither; cache: false never hits."""
    root = make_workspace(
        {
            ".haz/workspace.yml": "",
            "haz.yml": (
                f"tasks:\n  a:\n    command: {py('print(1)')}\n"
                f"  b:\n    command: {py('print(2)')}\n    cache: false\n"
            ),
        }
    )
    haz("run", "a", "b", cwd=root)
    assert haz("run", "a", "b", cwd=root).sources() == {"root:a": "local-cache", "root:b": "fresh"}
    assert haz("run", "a", "--force", cwd=root).sources() == {"root:a": "fresh"}
    assert haz("run", "a", cwd=root).sources() == {"root:a": "local-cache"}
    cache = root / ".haz" / "cache"
    before = sorted(p for p in cache.rglob("manifest.json"))
    (root / "haz.yml").write_text(f"tasks:\n  a:\n    command: {py('print(3)')}\n")
    assert haz("run", "a", "--no-cache", cwd=root).sources() == {"root:a": "fresh"}
    assert sorted(p for p in cache.rglob("manifest.json")) == before


def test_missing_literal_input_fails_the_task_and_skips_dependants(
    haz: HazRunner, make_workspace: WorkspaceMaker
) -> None:
    """CACHE-006: a key error is a task failure (exit 1) naming the path."""
    root = make_workspace(
        {
            ".haz/workspace.yml": "",
            "haz.yml": (
                f"tasks:\n  a:\n    command: {py('pass')}\n    inputs: [missing.txt]\n"
                f"  b:\n    command: {py('pass')}\n    deps: [~:a]\n"
                f"  c:\n    command: {py('pass')}\n"
            ),
        }
    )
    result = haz("run", "b", "c", cwd=root)
    assert result.code == 1
    a = result.task("root:a")
    assert a["state"] == "failed"
    assert a["source"] is None
    assert "/missing.txt" in str(a["error"])
    assert result.task("root:b")["skip_cause"] == {
        "kind": "upstream-errored",
        "upstream": "root:a",
    }
    assert result.task("root:c")["state"] == "succeeded"


def test_command_not_found_fails_clearly_and_skips_dependants(
    haz: HazRunner, make_workspace: WorkspaceMaker
) -> None:
    root = make_workspace(
        {
            ".haz/workspace.yml": "",
            "haz.yml": (
                "tasks:\n  a:\n    command: [definitely-not-a-command-haz]\n"
                f"  b:\n    command: {py('pass')}\n    deps: [~:a]\n"
            ),
        }
    )
    result = haz("run", "b", cwd=root)
    assert result.code == 1
    assert "command not found: definitely-not-a-command-haz" in str(result.task("root:a")["error"])
    assert result.task("root:b")["skip_cause"] == {
        "kind": "upstream-errored",
        "upstream": "root:a",
    }
    assert "- root:b (skipped)" in result.stderr


def test_summary_json_follows_exec_041(haz: HazRunner, make_workspace: WorkspaceMaker) -> None:
    root = make_workspace(
        {
            ".haz/workspace.yml": "",
            "haz.yml": (
                f"tasks:\n  build:\n    command: {py('import sys; sys.exit(2)')}\n"
                f"  test:\n    command: {py('pass')}\n    deps: [~:build]\n"
                f"  lint:\n    command: {py('pass')}\n"
            ),
        }
    )
    result = haz("run", "test", "lint", cwd=root)
    summary = result.summary
    assert summary is not None
    assert (summary["version"], summary["exit_code"]) == (1, 1)
    assert isinstance(summary["duration_ms"], int)
    tasks = cast("list[dict[str, Any]]", summary["tasks"])  # parsed JSON
    assert [t["task"] for t in tasks] == ["root:build", "root:lint", "root:test"]
    build = tasks[0]
    assert (build["state"], build["source"], build["exit_code"]) == ("failed", "fresh", 2)
    assert len(build["key"]) == 64
    assert tasks[2] == {
        "task": "root:test",
        "state": "skipped",
        "source": None,
        "key": None,
        "skip_cause": {"kind": "upstream-failed", "upstream": "root:build"},
    }


def test_dry_run_predicts_without_running(haz: HazRunner, make_workspace: WorkspaceMaker) -> None:
    """EXEC-030: keys and predicted state; dependants of a miss have unknown keys."""
    root = lib_workspace(make_workspace)
    plain = haz("run", "--workspace", "--dry-run", cwd=root)
    assert plain.code == 0
    lines = plain.out.splitlines()
    assert lines[0].startswith("app:build")
    assert lines[0].endswith("key unknown (waits on lib:build)")
    assert lines[1].endswith("miss")
    assert not (root / "lib" / "dist").exists()
    assert haz("run", "--workspace", cwd=root).code == 0
    data = json.loads(haz("run", "--workspace", "--dry-run=json", cwd=root).out)
    assert [(d["task"], d["state"]) for d in data] == [
        ("app:build", "local hit"),
        ("lib:build", "local hit"),
    ]


def test_haz_cache_dir_moves_the_cache(
    haz: HazRunner, make_workspace: WorkspaceMaker, tmp_path: Path
) -> None:
    """CACHE-010: HAZ_CACHE_DIR shares one cache between two clones at different paths."""
    shared = tmp_path / "shared-cache"
    env = {"HAZ_CACHE_DIR": str(shared)}
    one = lib_workspace(make_workspace)
    two = make_workspace(
        {str(p.relative_to(one)): p.read_text() for p in one.rglob("*") if p.is_file()},
        name="clone",
    )
    assert haz("run", "--workspace", cwd=one, env=env).code == 0
    result = haz("run", "--workspace", cwd=two, env=env)
    assert result.sources() == {"app:build": "local-cache", "lib:build": "local-cache"}
    assert (two / "lib" / "dist" / "app.bin").read_bytes() == (
        one / "lib" / "dist" / "app.bin"
    ).read_bytes()
    assert not (two / ".haz" / "cache").exists()


def test_no_default_task_is_a_usage_error(haz: HazRunner, make_workspace: WorkspaceMaker) -> None:
    root = make_workspace({".haz/workspace.yml": "", "haz.yml": "tasks:\n  a: {command: [x]}\n"})
    result = haz("run", cwd=root)
    assert result.code == 2
    assert "default" in result.stderr
    assert result.summary is None


def test_environment_reaches_the_process_and_the_key(
    haz: HazRunner, make_workspace: WorkspaceMaker
) -> None:
    """EXEC-008/CACHE-008: from_host is hashed, pass_through is not, override wins."""
    show = "[env]"  # /usr/bin/env: prints exactly what it was given
    root = make_workspace(
        {
            ".haz/workspace.yml": "",
            "haz.yml": (
                f"tasks:\n  t:\n    command: {show}\n"
                "    env:\n      from_host: [HAZ_T_A]\n      pass_through: [HAZ_T_B]\n"
                "      override: {HAZ_T_C: fixed}\n"
            ),
        }
    )
    env = {"HAZ_T_A": "1", "HAZ_T_B": "x", "HAZ_T_C": "host"}
    first = haz("run", "t", cwd=root, env=env)
    assert sorted(first.out.splitlines()) == [
        "[root:t] HAZ_T_A=1",
        "[root:t] HAZ_T_B=x",
        "[root:t] HAZ_T_C=fixed",
    ]
    assert haz("run", "t", cwd=root, env=env | {"HAZ_T_B": "y"}).sources() == {
        "root:t": "local-cache"
    }
    assert haz("run", "t", cwd=root, env=env | {"HAZ_T_A": "2"}).sources() == {"root:t": "fresh"}


def test_cache_survives_a_clean_environment(haz: HazRunner, make_workspace: WorkspaceMaker) -> None:
    """Keys never depend on the checkout's absolute path or the user's environment."""
    root = lib_workspace(make_workspace)
    assert haz("run", "lib:build", cwd=root).code == 0
    env = {"HOME": "/nonexistent", "LANG": "C"}
    assert haz("run", "lib:build", cwd=root, env=env).sources() == {"lib:build": "local-cache"}
    assert os.path.exists(root / ".haz" / "state")
