"""The workspace snapshot (hazremote.config.snapshot): reused only while nothing it depends on
changed; every change to configuration is seen on the next load (DISC-003/005, CFG-040)."""

from __future__ import annotations

import contextlib
import os
import pickle
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hazremote.config import load_workspace, load_workspace_traced
from hazremote.config import snapshot as snapshot_module
from hazremote.config._trace import Trace
from hazremote.config.snapshot import SNAPSHOT_NAME, WorkspaceSnapshot
from hazremote.domain.model import Workspace
from hazremote.errors import ConfigError
from hazremote.graph import TaskGraph, build_graph
from tests.support.workspaces import write_files

BASE = {
    ".haz/workspace.yml": "projects: [packages/*, tools]\n",
    "packages/a/haz.yml": "tasks:\n  build:\n    command: [echo, a]\n",
    "packages/b/haz.yml": "tasks:\n  build:\n    command: [echo, b]\n    deps: [a:build]\n",
    "packages/not-a-project/README": "no haz.yml here\n",
    "tools/haz.yml": "name: tools\ntasks:\n  lint:\n    command: [echo, lint]\n",
}


class Loads:
    """Opens the workspace through a snapshot, counting real loads; ``during`` runs between
    the load and the publication (a change made while the load was running)."""

    def __init__(self, root: Path, key_file: Path | None = None) -> None:
        self.root = root
        self.key_file: Path | None = key_file or root.parent / "user-state" / "snapshot.key"
        self.builds = 0
        self.during: Callable[[], object] | None = None

    def build(self) -> tuple[tuple[Workspace, TaskGraph], Trace]:
        self.builds += 1
        workspace, seen = load_workspace_traced(self.root)
        if self.during is not None:
            self.during()
        return (workspace, build_graph(workspace)), seen

    def open(self) -> tuple[Workspace, TaskGraph]:
        snapshot = WorkspaceSnapshot(
            self.root / ".haz" / "state", self.root, key_file=self.key_file
        )
        loaded: tuple[Workspace, TaskGraph] = snapshot.load_or_build(self.build)
        return loaded

    @property
    def file(self) -> Path:
        return self.root / ".haz" / "state" / SNAPSHOT_NAME


def settle() -> None:
    """Let the file system clock tick past the files just written (the racy rule)."""
    time.sleep(0.03)


@pytest.fixture
def ws(tmp_path: Path) -> Loads:
    root = write_files(tmp_path / "ws", BASE).resolve()
    settle()
    loads = Loads(root)
    loads.open()
    assert loads.builds == 1
    assert loads.file.is_file()
    return loads


def commands(workspace: Workspace) -> dict[str, Any]:
    return {
        f"{p.name}:{name}": spec.action
        for p in workspace.projects
        for name, spec in p.tasks.items()
    }


def test_an_unchanged_workspace_is_served_by_the_snapshot_equal_to_a_fresh_load(
    ws: Loads,
) -> None:
    workspace, graph = ws.open()
    assert ws.builds == 1
    fresh = load_workspace(ws.root)
    assert workspace == fresh
    assert graph == build_graph(fresh)
    assert graph.hard_dependants(next(t for t in graph.tasks if t.project == "a")) == tuple(
        t for t in graph.tasks if t.project == "b"
    )


def test_an_edited_project_file_is_seen_even_with_the_same_size(ws: Loads) -> None:
    target = ws.root / "packages/a/haz.yml"
    target.write_text(target.read_text().replace("echo, a]", "echo, A]"))
    workspace, _ = ws.open()
    assert ws.builds == 2
    assert "A" in str(commands(workspace)["a:build"])


@pytest.mark.parametrize(
    ("change", "expected_projects"),
    [
        (lambda root: write_files(root, {"packages/c/haz.yml": "tasks: {}\n"}), 4),
        (lambda root: (root / "packages/not-a-project/haz.yml").write_text("tasks: {}\n"), 4),
        (lambda root: (root / "packages/b/haz.yml").unlink(), 2),
        (lambda root: (root / "packages/b").rename(root / "packages/b2"), 3),
    ],
    ids=["new project dir", "haz.yml added to a dir", "haz.yml removed", "project renamed"],
)
def test_projects_added_or_removed_under_a_glob_are_seen(
    ws: Loads, change: Any, expected_projects: int
) -> None:
    change(ws.root)
    workspace, _ = ws.open()
    assert ws.builds == 2
    assert len(workspace.projects) == expected_projects
    assert workspace == load_workspace(ws.root)


def test_an_overlay_added_or_edited_is_seen(ws: Loads) -> None:
    overlay = ws.root / ".haz/tasks/extra.yml"
    write_files(ws.root, {".haz/tasks/extra.yml": "tagsFilter: [lib]\ntasks: {}\n"})
    settle()
    workspace, _ = ws.open()
    assert ws.builds == 2
    assert len(workspace.overlays) == 1
    ws.open()
    assert ws.builds == 2  # published again, and served
    overlay.write_text("tagsFilter: [app]\ntasks: {}\n")
    workspace, _ = ws.open()
    assert ws.builds == 3
    assert workspace == load_workspace(ws.root)
    assert workspace.overlays[0].tags_filter == ("app",)


def test_a_broken_file_is_reported_every_time_and_the_snapshot_never_masks_it(ws: Loads) -> None:
    (ws.root / "packages/a/haz.yml").write_text("tasks: [unclosed\n")
    for _ in range(2):
        with pytest.raises(ConfigError, match="invalid YAML"):
            ws.open()
    (ws.root / "packages/a/haz.yml").write_text(BASE["packages/a/haz.yml"])
    workspace, _ = ws.open()
    assert workspace == load_workspace(ws.root)


def test_a_file_changed_during_the_load_tick_is_never_published(tmp_path: Path) -> None:
    """Racy timestamps: a file as new as the load itself could change again unseen."""
    root = write_files(tmp_path / "ws", BASE).resolve()
    future = time.time() + 3600
    os.utime(root / "packages/a/haz.yml", (future, future))
    loads = Loads(root)
    loads.open()
    assert not loads.file.exists()
    assert [p.name for p in (root / ".haz/state").iterdir()] == []  # no temporary left behind
    loads.open()
    assert loads.builds == 2


@pytest.mark.parametrize(
    "damage",
    [b"", b"not a pickle", b"\x80\x05garbage", None],
    ids=["empty", "text", "bad pickle", "truncated"],
)
def test_a_damaged_snapshot_means_a_normal_load_and_is_replaced(
    ws: Loads, damage: bytes | None
) -> None:
    data = ws.file.read_bytes()
    ws.file.write_bytes(data[: len(data) // 2] if damage is None else damage)
    workspace, _ = ws.open()
    assert ws.builds == 2
    assert workspace == load_workspace(ws.root)
    ws.open()
    assert ws.builds == 2  # rewritten whole


def test_a_snapshot_copied_to_another_root_is_not_used(ws: Loads, tmp_path: Path) -> None:
    other = tmp_path / "copy"
    os.rename(ws.root, other)
    moved = Loads(other.resolve(), key_file=ws.key_file)
    workspace, _ = moved.open()
    assert moved.builds == 1
    assert workspace.root == other.resolve()


def test_a_snapshot_of_other_code_is_not_used(ws: Loads, monkeypatch: pytest.MonkeyPatch) -> None:
    original = snapshot_module._code_fingerprint
    monkeypatch.setattr(snapshot_module, "_code_fingerprint", lambda: (*original(), "other"))
    ws.open()
    assert ws.builds == 2


def test_loading_never_fails_because_the_snapshot_cannot_be_written(
    tmp_path: Path,
) -> None:
    root = write_files(tmp_path / "ws", BASE).resolve()
    (root / ".haz/state").write_text("a file where the state directory should be")
    settle()
    loads = Loads(root)
    workspace, _ = loads.open()
    assert workspace == load_workspace(root)
    assert (root / ".haz/state").read_text().startswith("a file")


def test_the_trace_names_every_file_read_and_directory_listed(tmp_path: Path) -> None:
    root = write_files(tmp_path / "ws", BASE).resolve()
    _, seen = load_workspace_traced(root)
    expected = {
        f"{root}/.haz/workspace.yml",
        f"{root}/.haz/tasks",
        f"{root}/packages",
        f"{root}/packages/a/haz.yml",
        f"{root}/packages/b/haz.yml",
        f"{root}/packages/not-a-project/haz.yml",
        f"{root}/tools/haz.yml",
    }
    assert expected <= set(seen)
    assert seen[f"{root}/packages/not-a-project/haz.yml"] is None  # probed, absent
    assert seen[f"{root}/packages/a/haz.yml"] is not None


def test_temporary_files_of_killed_loads_are_removed_after_an_hour(ws: Loads) -> None:
    state = ws.root / ".haz" / "state"
    old, recent = state / f".{SNAPSHOT_NAME}.old", state / f".{SNAPSHOT_NAME}.recent"
    for path in (old, recent):
        path.write_bytes(b"half written")
    long_ago = time.time() - 7200
    os.utime(old, (long_ago, long_ago))
    (ws.root / "packages/a/haz.yml").write_text(BASE["packages/a/haz.yml"] + "# edited\n")
    settle()
    ws.open()
    assert ws.builds == 2
    assert not old.exists()
    assert recent.exists()  # may belong to a load running right now
    assert sorted(p.name for p in state.iterdir()) == sorted([SNAPSHOT_NAME, recent.name])


@pytest.mark.parametrize(
    "change",
    [
        lambda root: (root / "packages/b/haz.yml").unlink(),
        lambda root: shutil.rmtree(root / "tools"),
        lambda root: (root / "packages/a/haz.yml").write_text("tasks: {}\n"),
    ],
    ids=["glob project file deleted", "literal project dir deleted", "file edited"],
)
def test_a_change_during_the_load_is_never_published(tmp_path: Path, change: Any) -> None:
    """A file deleted or edited after the load read it (before publication) would otherwise
    leave a snapshot of what no longer exists; a fresh load must see the change."""
    root = write_files(tmp_path / "ws", BASE).resolve()
    settle()
    loads = Loads(root)
    loads.during = lambda: change(root)
    loads.open()
    assert not loads.file.exists()
    loads.during = None
    with contextlib.suppress(ConfigError):  # a deleted literal project is an error now
        workspace, _ = loads.open()
        assert workspace == load_workspace(root)
    assert loads.builds == 2


def test_a_planted_or_foreign_snapshot_is_never_unpickled(ws: Loads, tmp_path: Path) -> None:
    """A snapshot committed to a repository (or written under another user's key) could run
    code when unpickled: without this user's MAC it is ignored, and replaced."""
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.system, (f"touch {marker}",))

    body = pickle.dumps(Evil())
    for forged in (body, bytes(32) + body, ws.file.read_bytes()[:32] + body):
        ws.file.write_bytes(forged)
        workspace, _ = ws.open()
        assert not marker.exists()
        assert workspace == load_workspace(ws.root)
    assert ws.builds == 4
    other_user = Loads(ws.root, key_file=tmp_path / "other-user" / "snapshot.key")
    other_user.open()
    assert other_user.builds == 1  # ws's snapshot is not valid under another key


@pytest.mark.parametrize("kind", ["symlink", "fifo", "group-writable"])
def test_a_snapshot_that_is_not_a_private_regular_file_is_ignored(ws: Loads, kind: str) -> None:
    real = ws.file.read_bytes()
    ws.file.unlink()
    if kind == "symlink":
        elsewhere = ws.root / "elsewhere"
        elsewhere.write_bytes(real)
        ws.file.symlink_to(elsewhere)
    elif kind == "fifo":
        os.mkfifo(ws.file)  # reading it would block forever
    else:
        ws.file.write_bytes(real)
        ws.file.chmod(0o664)
    ws.open()
    assert ws.builds == 2


def test_without_a_key_location_there_is_no_snapshot(tmp_path: Path) -> None:
    root = write_files(tmp_path / "ws", BASE).resolve()
    settle()
    loads = Loads(root)
    loads.key_file = None
    loads.open()
    loads.open()
    assert loads.builds == 2
    assert not (root / ".haz" / "state").exists()


def test_a_failed_load_leaves_no_temporary_file(ws: Loads) -> None:
    (ws.root / "packages/a/haz.yml").write_text("tasks: [unclosed\n")
    for _ in range(3):
        with pytest.raises(ConfigError):
            ws.open()
    state = ws.root / ".haz" / "state"
    assert sorted(p.name for p in state.iterdir()) == [SNAPSHOT_NAME]


def test_an_overlay_link_that_starts_resolving_is_seen(ws: Loads) -> None:
    """A dangling `.haz/tasks/*.yml` symlink is skipped; the day its target appears the
    listing does not change, so the link itself must be traced."""
    (ws.root / ".haz/tasks").mkdir()
    (ws.root / ".haz/tasks/ci.yml").symlink_to(ws.root / "shared-ci.yml")
    settle()
    workspace, _ = ws.open()
    assert workspace.overlays == ()
    ws.open()
    builds = ws.builds
    (ws.root / "shared-ci.yml").write_text("tagsFilter: [lib]\ntasks: {}\n")
    workspace, _ = ws.open()
    assert ws.builds == builds + 1
    assert [o.name for o in workspace.overlays] == ["ci"]
