"""``haz why`` and ``haz cache`` end to end.

Spec coverage: SPEC §5 `haz why` (key, components, lookup status, what changed — inputs,
env through the local index, predecessors, command), CACHE-016 lookup statuses, CACHE-011
(no env value is ever printed or stored in a manifest), CACHE-021/022 (`info`, `clean
--soft/--max-age/--max-size/--dry-run`, `clear`), EXEC-021 (`why` on an unknown task → 2).
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.run.conftest import HazRunner, WorkspaceMaker, py

SECRET = "s3cr3t-value-never-shown"


def workspace(make_workspace: WorkspaceMaker) -> Path:
    return make_workspace(
        {
            ".haz/workspace.yml": "",
            "haz.yml": (
                "tasks:\n"
                f"  gen:\n    command: {py('print(open(chr(103) + chr(46) + chr(116)).read())')}\n"
                "    inputs: [g.t]\n"
                f"  build:\n    command: {py('print(1)')}\n"
                "    inputs: ['src/**']\n    deps: [~:gen]\n"
                "    env: {from_host: [API_TOKEN]}\n"
            ),
            "g.t": "one",
            "src/a.txt": "a",
            "src/b.txt": "b",
        }
    )


def test_why_reports_components_and_a_hit(haz: HazRunner, make_workspace: WorkspaceMaker) -> None:
    root = workspace(make_workspace)
    env = {"API_TOKEN": SECRET}
    assert haz("run", "build", cwd=root, env=env).code == 0
    result = haz("why", "build", cwd=root, env=env)
    assert result.code == 0
    text = result.out
    assert text.startswith("root:build\n  key: ")
    assert "  lookup: hit" in text
    assert "/src/a.txt" in text
    assert "root:gen  stdout " in text
    assert "API_TOKEN  set" in text
    assert SECRET not in text
    manifests = list((root / ".haz" / "cache").rglob("manifest.json"))
    assert manifests
    assert all(SECRET not in m.read_text() for m in manifests)


def test_why_explains_a_miss_by_what_changed(
    haz: HazRunner, make_workspace: WorkspaceMaker
) -> None:
    """The most requested feature: which inputs and env vars differ from the stored run."""
    root = workspace(make_workspace)
    assert haz("run", "build", cwd=root, env={"API_TOKEN": "a"}).code == 0
    (root / "src" / "a.txt").write_text("changed")
    (root / "src" / "b.txt").unlink()
    (root / "src" / "c.txt").write_text("new")
    result = haz("why", "build", cwd=root, env={"API_TOKEN": "b"})
    text = result.out
    assert "  lookup: miss-no-entry" in text
    assert "what changed since the last stored run" in text
    assert "input changed: /src/a.txt" in text
    assert "input removed: /src/b.txt" in text
    assert "input added: /src/c.txt" in text
    assert "env changed: API_TOKEN (value differs)" in text
    assert "'a'" not in text
    assert "'b'" not in text


def test_why_names_a_predecessor_that_would_run(
    haz: HazRunner, make_workspace: WorkspaceMaker
) -> None:
    root = workspace(make_workspace)
    assert haz("run", "build", cwd=root).code == 0
    (root / "g.t").write_text("two")
    text = haz("why", "build", cwd=root).out
    assert "key: unknown until root:gen has run" in text
    assert "nothing in the compared components" in text


def test_why_on_an_unknown_task_exits_2(haz: HazRunner, make_workspace: WorkspaceMaker) -> None:
    root = workspace(make_workspace)
    result = haz("why", "nope:build", cwd=root)
    assert result.code == 2
    assert "nope:build" in result.stderr


def test_why_reports_a_corrupt_entry(haz: HazRunner, make_workspace: WorkspaceMaker) -> None:
    """CACHE-016: a manifest that fails to parse is `miss-corrupt`, and the run recovers."""
    root = workspace(make_workspace)
    assert haz("run", "gen", cwd=root).code == 0
    (manifest,) = (root / ".haz" / "cache").rglob("manifest.json")
    manifest.write_text("{not json")
    assert "lookup: miss-corrupt" in haz("why", "gen", cwd=root).out
    rerun = haz("run", "gen", cwd=root)
    assert rerun.code == 0
    assert rerun.sources() == {"root:gen": "fresh"}
    assert json.loads(manifest.read_text())["key"] == rerun.task("root:gen")["key"]


def test_cache_info_clean_and_clear(haz: HazRunner, make_workspace: WorkspaceMaker) -> None:
    root = workspace(make_workspace)
    assert haz("run", "build", cwd=root).code == 0
    info = haz("cache", "info", cwd=root)
    assert info.code == 0
    assert "entries: 2" in info.out
    (root / ".haz" / "cache" / "ab").mkdir(parents=True, exist_ok=True)
    stray = root / ".haz" / "cache" / "ab" / (".tmp-" + "ab" * 32 + "-x")
    stray.mkdir()
    import os

    os.utime(stray, (1, 1))
    dry = haz("cache", "clean", "--soft", "--dry-run", cwd=root)
    assert "would remove" in dry.out
    assert stray.exists()
    assert haz("cache", "clean", "--soft", cwd=root).code == 0
    assert not stray.exists()
    assert "2 entries" in haz("cache", "clean", "--max-age", "1d", cwd=root).out
    assert "0 entries" in haz("cache", "clean", "--max-size", "0", cwd=root).out
    assert haz("run", "build", cwd=root).sources() == {"root:build": "fresh", "root:gen": "fresh"}
    assert haz("cache", "clear", cwd=root).code == 0
    assert "entries: 0" in haz("cache", "info", cwd=root).out
    assert haz("cache", "clean", cwd=root).code == 2
    assert haz("cache", "info", "--soft", cwd=root).code == 2
