"""Default inputs of a task without an ``inputs`` key (PATH-001..016 as amended for issue 12).

In a git work tree: what git tracks or would track under the project directory; outside one:
every file. Never ``.haz/``, ``.git/``, nested projects' directories or the task's own
outputs. Real git (``GitWorkTree``) where the rule is git's, a fake ``WorkTree`` where the
test counts listings.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from hazremote.keys.components import InputFile
from hazremote.keys.worktree import GitWorkTree
from tests.keys.keykit import make_task, open_deriver, write

GIT = ["git", "-c", "user.email=t@haz", "-c", "user.name=t", "-c", "init.defaultBranch=main"]


def _git(root: Path, *args: str) -> None:
    subprocess.run([*GIT, *args], cwd=root, check=True, capture_output=True)


def _paths(files: tuple[InputFile, ...]) -> list[str]:
    return [f.path for f in files]


def _repo(root: Path) -> Path:
    """A project ``lib`` with a nested project ``lib/vendor``, committed, plus strays."""
    write(root, ".haz/workspace.yml", "projects: [lib, lib/vendor]\n")
    write(root, ".gitignore", "*.log\n/lib/build/\n.haz/cache/\n")
    write(root, "lib/haz.yml", "tasks: {}\n")
    write(root, "lib/src/a.c", "a")
    write(root, "lib/src/tracked-then-ignored.log", "t")
    write(root, "lib/vendor/haz.yml", "tasks: {}\n")
    write(root, "lib/vendor/v.c", "v")
    write(root, "lib/vendor-notes.txt", "sibling, not nested")
    write(root, "top.txt", "outside the project")
    _git(root, "init", "-q")
    _git(root, "add", ".gitignore", ".haz", "lib", "top.txt")
    _git(root, "add", "-f", "lib/src/tracked-then-ignored.log")
    _git(root, "commit", "-qm", "init")
    write(root, "lib/src/new.c", "untracked, not ignored")
    write(root, "lib/debug.log", "ignored")
    write(root, "lib/build/obj.o", "ignored directory")
    write(root, "lib/dist/out.js", "own output")
    write(root, ".haz/cache/blob", "never an input")
    return root


def test_git_default_is_tracked_and_untracked_not_ignored(tmp_path: Path) -> None:
    """PATH: tracked + untracked-not-ignored under the project; ignored, nested project's
    and own outputs excluded; a tracked file git ignores now is still tracked."""
    root = _repo(tmp_path / "ws")
    task = make_task(inputs=None, outputs=["dist/**"], nested=["lib/vendor"])
    with open_deriver(root, work_tree=GitWorkTree(root=str(root))) as deriver:
        files = deriver.inputs(task)
    assert _paths(files) == [
        "/lib/haz.yml",
        "/lib/src/a.c",
        "/lib/src/new.c",
        "/lib/src/tracked-then-ignored.log",
        "/lib/vendor-notes.txt",
    ]


def test_git_default_skips_a_file_deleted_but_still_in_the_index(tmp_path: Path) -> None:
    """PATH: a tracked file missing from disk does not exist, so it is no input (and no
    error, unlike a missing literal input)."""
    root = _repo(tmp_path / "ws")
    (root / "lib" / "src" / "a.c").unlink()
    task = make_task(inputs=None, nested=["lib/vendor"])
    with open_deriver(root, work_tree=GitWorkTree(root=str(root))) as deriver:
        assert "/lib/src/a.c" not in _paths(deriver.inputs(task))


def test_outside_git_default_is_every_file(tmp_path: Path) -> None:
    """PATH: outside a git work tree every file under the project (ignore files mean
    nothing), minus nested projects, own outputs and .haz/."""
    root = tmp_path / "ws"
    write(root, ".haz/workspace.yml", "projects: [lib, lib/vendor]\n")
    write(root, ".gitignore", "*.log\n")
    write(root, "lib/a.c", "a")
    write(root, "lib/debug.log", "not ignored: no git here")
    write(root, "lib/vendor/v.c", "v")
    write(root, "lib/dist/out.js", "own output")
    write(root, "other.txt", "x")
    task = make_task(inputs=None, outputs=["dist/**"], nested=["lib/vendor"])
    with open_deriver(root, work_tree=GitWorkTree(root=str(root))) as deriver:
        assert _paths(deriver.inputs(task)) == ["/lib/a.c", "/lib/debug.log"]


def test_root_project_default_excludes_control_dirs_and_every_nested_project(
    tmp_path: Path,
) -> None:
    """PATH: the root project's default never includes .haz/ or .git/, nor any project."""
    root = _repo(tmp_path / "ws")
    task = make_task(project="root", project_dir="", inputs=None, nested=["lib"])
    for work_tree in (GitWorkTree(root=str(root)), None):
        with open_deriver(root, work_tree=work_tree) as deriver:
            paths = _paths(deriver.inputs(task))
        assert "/.gitignore" in paths
        assert "/top.txt" in paths
        assert not [p for p in paths if p.startswith(("/.haz/", "/.git/", "/lib/"))]


def test_empty_inputs_mean_no_files(tmp_path: Path) -> None:
    """PATH: `inputs: []` is no input files (unlike an absent key)."""
    root = _repo(tmp_path / "ws")
    with open_deriver(root, work_tree=GitWorkTree(root=str(root))) as deriver:
        assert deriver.inputs(make_task(name="none", inputs=[])) == ()
        assert deriver.inputs(make_task(inputs=None, nested=["lib/vendor"])) != ()


def test_nested_repository_is_listed_by_its_own_rules(tmp_path: Path) -> None:
    """Decision: an untracked nested repository (or a submodule) below the project counts
    with its own git's rules: its tracked and untracked files, not its ignored ones."""
    root = _repo(tmp_path / "ws")
    inner = root / "lib" / "third_party"
    write(inner, "x.c", "x")
    write(inner, ".gitignore", "*.o\n")
    write(inner, "x.o", "ignored by the inner repo")
    _git(inner, "init", "-q")
    _git(inner, "add", ".")
    _git(inner, "commit", "-qm", "inner")
    write(inner, "y.c", "untracked in the inner repo")
    task = make_task(inputs=None, nested=["lib/vendor"])
    with open_deriver(root, work_tree=GitWorkTree(root=str(root))) as deriver:
        paths = _paths(deriver.inputs(task))
    inside = [p for p in paths if p.startswith("/lib/third_party/")]
    assert inside == [
        "/lib/third_party/.gitignore",
        "/lib/third_party/x.c",
        "/lib/third_party/y.c",
    ]


def test_submodule_contents_are_inputs(tmp_path: Path) -> None:
    """Decision: a submodule's checked-out files are inputs of the project holding it."""
    upstream = tmp_path / "upstream"
    write(upstream, "u.c", "u")
    _git(upstream, "init", "-q")
    _git(upstream, "add", ".")
    _git(upstream, "commit", "-qm", "u")
    root = _repo(tmp_path / "ws")
    _git(
        root, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(upstream), "lib/sub"
    )
    task = make_task(inputs=None, nested=["lib/vendor"])
    with open_deriver(root, work_tree=GitWorkTree(root=str(root))) as deriver:
        assert "/lib/sub/u.c" in _paths(deriver.inputs(task))


def test_workspace_nested_in_a_larger_repository_sees_its_own_files(tmp_path: Path) -> None:
    """The listing runs in the workspace root: paths stay workspace-absolute."""
    outer = tmp_path / "outer"
    write(outer, "README", "outer")
    root = _repo(outer / "ws")
    _git(outer, "init", "-q")  # the workspace's own repository is nested in this one
    task = make_task(inputs=None, nested=["lib/vendor"])
    with open_deriver(root, work_tree=GitWorkTree(root=str(root))) as deriver:
        assert "/lib/src/a.c" in _paths(deriver.inputs(task))


# --- one listing per run, and in-run invalidation (fake WorkTree) ----------------------------


class FakeWorkTree:
    """A :class:`WorkTree` answering from a set of paths, counting calls."""

    def __init__(self, files: Sequence[str]) -> None:
        self.files = set(files)
        self.listings = 0
        self.untracked_calls: list[tuple[str, ...]] = []

    def list_files(self) -> tuple[str, ...] | None:
        self.listings += 1
        return tuple(self.files)

    def untracked_under(self, prefixes: Sequence[str]) -> tuple[str, ...]:
        self.untracked_calls.append(tuple(prefixes))
        return tuple(
            f for f in self.files if any(f == p or f.startswith(p + "/") for p in prefixes)
        )


def test_one_listing_serves_every_project(tmp_path: Path) -> None:
    """One work-tree listing per run, partitioned by project (the brief's one git call)."""
    root = tmp_path / "ws"
    names = [f"p{i}/f.txt" for i in range(20)]
    for name in names:
        write(root, name, name)
    tree = FakeWorkTree(names)
    tasks = [make_task(project=f"p{i}", inputs=None) for i in range(20)]
    with open_deriver(root, work_tree=tree) as deriver:
        assert deriver.prefetch(tasks) == {}
        for i, task in enumerate(tasks):
            assert _paths(deriver.inputs(task)) == [f"/p{i}/f.txt"]
    assert tree.listings == 1
    assert tree.untracked_calls == []


def test_untracked_output_of_a_predecessor_is_an_input_of_a_dependant(tmp_path: Path) -> None:
    """In-run invalidation: after `build` wrote `gen/code.c` (untracked, not ignored), the
    dependant's default inputs include it; other projects are not listed again."""
    root = tmp_path / "ws"
    write(root, "lib/a.c", "a")
    write(root, "app/m.c", "m")
    tree = FakeWorkTree(["lib/a.c", "app/m.c"])
    build = make_task(name="build", inputs=[], outputs=["gen/**"])
    test = make_task(name="test", inputs=None)
    app = make_task(project="app", name="build", inputs=None)
    with open_deriver(root, work_tree=tree) as deriver:
        assert _paths(deriver.inputs(test)) == ["/lib/a.c"]
        assert _paths(deriver.inputs(app)) == ["/app/m.c"]
        write(root, "lib/gen/code.c", "generated")
        tree.files.add("lib/gen/code.c")
        deriver.outputs_written(build.outputs)
        assert _paths(deriver.inputs(app)) == ["/app/m.c"]
        assert tree.untracked_calls == []  # app is not touched by lib's outputs
        assert _paths(deriver.inputs(test)) == ["/lib/a.c", "/lib/gen/code.c"]
        assert tree.untracked_calls == [("lib/gen",)]
        assert _paths(deriver.inputs(test)) == ["/lib/a.c", "/lib/gen/code.c"]
        assert tree.untracked_calls == [("lib/gen",)]  # listed again once, not per lookup
    assert tree.listings == 1


def test_ignored_output_of_a_predecessor_is_not_an_input(tmp_path: Path) -> None:
    """Real git: a predecessor's output git ignores stays out of the dependant's inputs,
    one it does not ignore comes in."""
    root = _repo(tmp_path / "ws")
    build = make_task(name="build", inputs=[], outputs=["build/**", "gen/**"])
    test = make_task(name="test", inputs=None, nested=["lib/vendor"])
    with open_deriver(root, work_tree=GitWorkTree(root=str(root))) as deriver:
        before = _paths(deriver.inputs(test))
        write(root, "lib/build/lib.a", "ignored")
        write(root, "lib/gen/code.c", "not ignored")
        deriver.outputs_written(build.outputs)
        after = _paths(deriver.inputs(test))
    assert sorted(set(after) - set(before)) == ["/lib/gen/code.c"]


def test_outside_git_written_outputs_are_seen_by_the_walk(tmp_path: Path) -> None:
    """Outside git the memoised walk forgets what outputs touched, as for globs."""
    root = tmp_path / "ws"
    write(root, "lib/a.c", "a")
    build = make_task(name="build", inputs=[], outputs=["gen/**"])
    test = make_task(name="test", inputs=None)
    with open_deriver(root) as deriver:
        assert _paths(deriver.inputs(test)) == ["/lib/a.c"]
        write(root, "lib/gen/code.c", "generated")
        deriver.outputs_written(build.outputs)
        assert _paths(deriver.inputs(test)) == ["/lib/a.c", "/lib/gen/code.c"]


def test_default_inputs_change_the_key_when_a_project_file_changes(tmp_path: Path) -> None:
    """The complaint in miniature: editing any project file changes a default task's key,
    while `inputs: []` keeps its key."""
    root = _repo(tmp_path / "ws")
    default = make_task(inputs=None, nested=["lib/vendor"])
    empty = make_task(name="empty", inputs=[])
    with open_deriver(root, work_tree=GitWorkTree(root=str(root))) as deriver:
        keys = (deriver.derive(default).key, deriver.derive(empty).key)
    write(root, "lib/src/a.c", "edited")
    os.utime(root / "lib" / "src" / "a.c", ns=(1, 1))  # whatever the clock, content changed
    with open_deriver(root, work_tree=GitWorkTree(root=str(root))) as deriver:
        assert deriver.derive(default).key != keys[0]
        assert deriver.derive(empty).key == keys[1]


def test_symlink_listed_by_git_contributes_its_target(tmp_path: Path) -> None:
    """A tracked symlink to a file contributes like a glob match (its target's bytes); a
    dangling one contributes nothing."""
    root = _repo(tmp_path / "ws")
    os.symlink("src/a.c", root / "lib" / "link.c")
    os.symlink("nowhere", root / "lib" / "dangling")
    task = make_task(inputs=None, nested=["lib/vendor"])
    with open_deriver(root, work_tree=GitWorkTree(root=str(root))) as deriver:
        files = {f.path: f for f in deriver.inputs(task)}
    assert files["/lib/link.c"].digest == files["/lib/src/a.c"].digest
    assert "/lib/dangling" not in files


def test_git_listing_is_relative_to_the_workspace_root(tmp_path: Path) -> None:
    """The adapter itself: root-relative paths, nothing ignored, nothing under .git/."""
    root = _repo(tmp_path / "ws")
    listed = GitWorkTree(root=str(root)).list_files()
    assert listed is not None
    assert "lib/src/a.c" in listed
    assert "lib/src/new.c" in listed
    assert "lib/debug.log" not in listed
    assert not [p for p in listed if p.startswith(".git/")]
    (tmp_path / "not-a-repo").mkdir()
    assert GitWorkTree(root=str(tmp_path / "not-a-repo")).list_files() is None


def test_partition_cuts_nested_projects_whose_names_sort_around_a_slash(
    tmp_path: Path,
) -> None:
    """`lib-extra/` sorts before `lib/` ('-' < '/'): both nested runs are cut out of the
    sorted listing, and nothing else is."""
    root = tmp_path / "ws"
    names = ["a.txt", "lib-extra/x", "lib/y", "lib0/z", "lib.txt"]
    for name in names:
        write(root, name, name)
    task = make_task(project="root", project_dir="", inputs=None, nested=["lib-extra", "lib"])
    with open_deriver(root, work_tree=FakeWorkTree(names)) as deriver:
        assert _paths(deriver.inputs(task)) == ["/a.txt", "/lib.txt", "/lib0/z"]
