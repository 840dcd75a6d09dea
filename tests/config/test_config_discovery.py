"""Workspace root discovery, project selection and the bearing project (DISC-001..007)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hazremote.config import bearing_project, find_workspace_root, load_workspace
from tests.config.conftest import WriteTree

WS = ".haz/workspace.yml"


# -- DISC-001 ---------------------------------------------------------------------------------


def test_root_is_found_from_a_nested_working_directory(write_tree: WriteTree) -> None:
    """DISC-001: the nearest ancestor holding .haz/workspace.yml is the root."""
    root = write_tree({WS: "", "packages/web/src/deep/": ""})
    assert find_workspace_root(root / "packages/web/src/deep") == root


def test_root_search_includes_the_start_directory(write_tree: WriteTree) -> None:
    """DISC-001: the working directory itself counts (inclusive)."""
    root = write_tree({WS: ""})
    assert find_workspace_root(root) == root


def test_nearest_workspace_wins_over_an_enclosing_one(write_tree: WriteTree) -> None:
    """DISC-001: nested workspaces — the nearest ancestor is the root."""
    root = write_tree({WS: "", f"inner/{WS}": "", "inner/a/": ""})
    assert find_workspace_root(root / "inner/a") == root / "inner"


def test_a_haz_directory_without_workspace_yml_is_not_a_root(write_tree: WriteTree) -> None:
    """DISC-001: `.haz/` must hold workspace.yml; an empty .haz is passed over."""
    root = write_tree({WS: "", "sub/.haz/cache/": "", "sub/x/": ""})
    assert find_workspace_root(root / "sub/x") == root


def test_no_workspace_gives_none(tmp_path: Path) -> None:
    """DISC-001: without any .haz/workspace.yml up the tree the answer is None."""
    start = tmp_path / "a" / "b"
    start.mkdir(parents=True)
    if find_workspace_root(tmp_path.parent) is not None:  # pragma: no cover - odd host setup
        pytest.skip("a workspace encloses the temporary directory")
    assert find_workspace_root(start) is None


def test_relative_start_is_taken_from_the_process_cwd(
    write_tree: WriteTree, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DISC-001: a relative start path is resolved against the working directory."""
    root = write_tree({WS: "", "pkg/": ""})
    monkeypatch.chdir(root / "pkg")
    found = find_workspace_root(Path("."))
    assert found is not None
    assert found.resolve() == root.resolve()


# -- DISC-007 ---------------------------------------------------------------------------------


def _nested(write_tree: WriteTree) -> Path:
    return write_tree(
        {
            WS: "projects: [., apps/*, apps/web/e2e]\n",
            "haz.yml": "",
            "apps/web/haz.yml": "",
            "apps/web/e2e/haz.yml": "",
            "apps/api/haz.yml": "",
            "apps/web/src/components/": "",
            "apps/web/e2e/specs/": "",
            "docs/": "",
        }
    )


@pytest.mark.parametrize(
    ("cwd", "expected"),
    [
        ("", "root"),
        ("docs", "root"),
        ("apps", "root"),
        ("apps/web", "web"),
        ("apps/web/src/components", "web"),
        ("apps/web/e2e", "e2e"),
        ("apps/web/e2e/specs", "e2e"),
        ("apps/api", "api"),
    ],
)
def test_bearing_project_is_the_deepest_project_containing_cwd(
    write_tree: WriteTree, cwd: str, expected: str
) -> None:
    """DISC-007: the deepest project directory that contains the cwd wins."""
    root = _nested(write_tree)
    workspace = load_workspace(root)
    project = bearing_project(workspace, root / cwd if cwd else root)
    assert project is not None
    assert project.name == expected


def test_bearing_project_is_absent_outside_every_project(write_tree: WriteTree) -> None:
    """DISC-007: without a root project, the workspace root has no bearing project."""
    root = write_tree({WS: "projects: [lib]\n", "lib/haz.yml": "", "tools/": ""})
    workspace = load_workspace(root)
    assert bearing_project(workspace, root) is None
    assert bearing_project(workspace, root / "tools") is None
    lib = bearing_project(workspace, root / "lib")
    assert lib is not None
    assert lib.name == "lib"


def test_bearing_project_is_absent_outside_the_workspace(write_tree: WriteTree) -> None:
    """DISC-007: a cwd outside the workspace root has no bearing project."""
    root = write_tree({WS: "", "haz.yml": ""})
    workspace = load_workspace(root)
    assert bearing_project(workspace, root.parent) is None


def test_a_sibling_directory_sharing_a_name_prefix_is_not_inside(write_tree: WriteTree) -> None:
    """DISC-007: `apps/web-old` is not inside project `apps/web` (segment-wise containment)."""
    root = write_tree({WS: "projects: [apps/web]\n", "apps/web/haz.yml": "", "apps/web-old/": ""})
    workspace = load_workspace(root)
    assert bearing_project(workspace, root / "apps/web-old") is None


def test_bearing_project_through_a_symlinked_cwd(write_tree: WriteTree, tmp_path: Path) -> None:
    """DISC-007: a cwd reached through a symbolic link still finds its project."""
    root = write_tree({WS: "projects: [lib]\n", "lib/haz.yml": ""})
    link = tmp_path / "link"
    os.symlink(root, link)
    workspace = load_workspace(link)
    project = bearing_project(workspace, link / "lib")
    assert project is not None
    assert project.name == "lib"


def test_an_explicit_root_loads_regardless_of_the_working_directory(
    write_tree: WriteTree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DISC-001: `--workspace-root DIR` is the caller passing DIR to load_workspace; the
    process cwd plays no part in loading."""
    root = write_tree({WS: "projects: [lib]\n", "lib/haz.yml": ""})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    workspace = load_workspace(root)
    assert [p.name for p in workspace.projects] == ["lib"]
    assert bearing_project(workspace, elsewhere) is None
