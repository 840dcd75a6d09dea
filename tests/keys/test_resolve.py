"""Input resolution against real files (CACHE-006, PATH rules) and component assembly."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from hazremote.domain.digest import Digest, digest_bytes
from hazremote.domain.model import HashName, ShellAction
from hazremote.domain.patterns import parse_pattern
from hazremote.domain.refs import TaskId
from hazremote.keys.components import InputFile, PredecessorStreams
from hazremote.keys.fs import ReadableFile
from hazremote.keys.resolve import InputError, build_components
from tests.keys.keykit import CountingFs, make_task, open_deriver, write

H = HashName.BLAKE3


def _d(data: bytes) -> Digest:
    return digest_bytes(H, data)


def _paths(files: tuple[InputFile, ...]) -> list[str]:
    return [f.path for f in files]


def _inputs(root: Path, *inputs: str, outputs: tuple[str, ...] = ()) -> tuple[InputFile, ...]:
    with open_deriver(root) as deriver:
        return deriver.inputs(make_task(inputs=inputs, outputs=outputs))


# --- literal inputs ------------------------------------------------------------------------------


def test_literal_file_gives_path_executable_bit_and_digest(tmp_path: Path) -> None:
    """CACHE-006: workspace-absolute path, executable bit (any x bit), content digest."""
    write(tmp_path, "lib/run.sh", b"#!/bin/sh\n", mode=0o744)
    write(tmp_path, "lib/data.txt", b"data\n", mode=0o644)
    assert _inputs(tmp_path, "run.sh", "data.txt") == (
        InputFile(
            path="/lib/data.txt", executable=False, digest=_d(b"data\n"), size=len(b"data\n")
        ),
        InputFile(
            path="/lib/run.sh", executable=True, digest=_d(b"#!/bin/sh\n"), size=len(b"#!/bin/sh\n")
        ),
    )


@pytest.mark.parametrize("mode", [0o100, 0o010, 0o001])
def test_any_single_x_bit_makes_an_input_executable(tmp_path: Path, mode: int) -> None:
    """CACHE-006: executable means any of the three x bits."""
    write(tmp_path, "lib/a", b"a", mode=0o600 | mode)
    assert _inputs(tmp_path, "a")[0].executable


def test_missing_literal_is_a_key_error_naming_the_path(tmp_path: Path) -> None:
    """CACHE-006: a missing literal input fails the task with a message naming the path."""
    (tmp_path / "lib").mkdir()
    with pytest.raises(InputError, match=r"/lib/src/missing\.c does not exist") as info:
        _inputs(tmp_path, "src/missing.c")
    assert info.value.path == "/lib/src/missing.c"
    assert info.value.exit_code == 1


def test_directory_literal_is_a_key_error(tmp_path: Path) -> None:
    """CACHE-006: a literal input that is a directory is a key error naming it."""
    (tmp_path / "lib" / "src").mkdir(parents=True)
    with pytest.raises(InputError, match=r"input /lib/src is a directory"):
        _inputs(tmp_path, "src")


def test_dangling_symlink_literal_is_a_key_error(tmp_path: Path) -> None:
    """CACHE-006: a literal dangling symlink is a key error naming it."""
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "link").symlink_to("nowhere")
    with pytest.raises(InputError, match=r"input /lib/link is a dangling symlink"):
        _inputs(tmp_path, "link")


def test_literal_symlink_to_a_directory_is_a_key_error(tmp_path: Path) -> None:
    """CACHE-006: a literal must resolve to a regular file."""
    (tmp_path / "lib" / "d").mkdir(parents=True)
    (tmp_path / "lib" / "link").symlink_to("d")
    with pytest.raises(InputError, match=r"/lib/link is a symlink to a directory"):
        _inputs(tmp_path, "link")


def test_literal_fifo_is_a_key_error(tmp_path: Path) -> None:
    """CACHE-006: a literal that is not a regular file (a FIFO) is a key error."""
    (tmp_path / "lib").mkdir()
    os.mkfifo(tmp_path / "lib" / "pipe")
    with pytest.raises(InputError, match=r"/lib/pipe is not a regular file"):
        _inputs(tmp_path, "pipe")


def test_literal_symlink_to_file_contributes_its_own_path_and_target_bytes(
    tmp_path: Path,
) -> None:
    """CACHE-006: a symlink contributes its own path and its target's bytes (and x bit)."""
    write(tmp_path, "shared/tool.sh", b"echo\n", mode=0o755)
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "tool").symlink_to("../shared/tool.sh")
    assert _inputs(tmp_path, "tool") == (
        InputFile(path="/lib/tool", executable=True, digest=_d(b"echo\n"), size=len(b"echo\n")),
    )


def test_literal_excluded_by_an_output_or_negation_is_not_checked(tmp_path: Path) -> None:
    """PATH: an input matching the task's own outputs or a ``!`` pattern is not an input, so
    its absence is no error."""
    (tmp_path / "lib").mkdir()
    assert _inputs(tmp_path, "gen.c", outputs=("gen.c",)) == ()
    assert _inputs(tmp_path, "gone.c", "!gone.c") == ()


def test_literal_under_root_control_dirs_is_dropped(tmp_path: Path) -> None:
    """PATH: nothing under the root ``.haz/`` or ``.git/`` is an input, even when literal."""
    write(tmp_path, ".haz/workspace.yml", "projects: []\n")
    write(tmp_path, ".git/HEAD", "ref\n")
    assert _inputs(tmp_path, "/.haz/workspace.yml", "/.git/HEAD") == ()


def test_duplicates_are_removed_and_inputs_sorted_by_path(tmp_path: Path) -> None:
    """CACHE-006: the list is sorted by path with duplicates removed."""
    for name in ("b", "a", "c"):
        write(tmp_path, f"lib/{name}", name)
    files = _inputs(tmp_path, "c", "a", "*", "/lib/b", "a")
    assert _paths(files) == ["/lib/a", "/lib/b", "/lib/c"]


# --- globs ---------------------------------------------------------------------------------------


def test_glob_matches_files_recursively_and_nothing_else(tmp_path: Path) -> None:
    """PATH: ``**`` spans directories, ``*`` stays within a segment, directories are not files."""
    for rel in ("lib/src/a.ts", "lib/src/x/b.ts", "lib/src/x/y/c.ts", "lib/src/d.js", "lib/e.ts"):
        write(tmp_path, rel, rel)
    (tmp_path / "lib" / "src" / "dir.ts").mkdir()
    assert _paths(_inputs(tmp_path, "src/**/*.ts")) == [
        "/lib/src/a.ts",
        "/lib/src/x/b.ts",
        "/lib/src/x/y/c.ts",
    ]
    assert _paths(_inputs(tmp_path, "src/*.ts")) == ["/lib/src/a.ts"]


def test_glob_matching_nothing_contributes_nothing(tmp_path: Path) -> None:
    """CACHE-006: a glob matching nothing (or under a missing directory) is no error."""
    write(tmp_path, "lib/a.txt", "a")
    assert _inputs(tmp_path, "*.rs", "missing/**") == ()


def test_glob_excludes_the_tasks_own_outputs(tmp_path: Path) -> None:
    """PATH: files matching the task's own output patterns are never inputs."""
    for rel in ("lib/src/a.c", "lib/out/a.o", "lib/src/gen.c"):
        write(tmp_path, rel, rel)
    files = _inputs(tmp_path, "**", outputs=("out/**", "src/gen.c"))
    assert _paths(files) == ["/lib/src/a.c"]


def test_negated_inputs_exclude_what_they_match(tmp_path: Path) -> None:
    """PATH: an input pattern starting with ``!`` excludes what it matches."""
    for rel in ("lib/src/a.ts", "lib/src/a.test.ts", "lib/src/x/b.test.ts", "lib/package.json"):
        write(tmp_path, rel, rel)
    files = _inputs(tmp_path, "src/**/*.ts", "!src/**/*.test.ts", "package.json")
    assert _paths(files) == ["/lib/package.json", "/lib/src/a.ts"]


def test_root_glob_never_enters_root_haz_or_git(tmp_path: Path) -> None:
    """PATH: globs never include anything under the root's ``.haz/`` or ``.git/``."""
    fs = CountingFs()
    for rel in (".haz/workspace.yml", ".git/HEAD", ".hazel/keep", "a.txt", "sub/.git/x"):
        write(tmp_path, rel, rel)
    with open_deriver(tmp_path, fs=fs) as deriver:
        files = deriver.inputs(make_task(project_dir="", inputs=("**",)))
    assert _paths(files) == ["/.hazel/keep", "/a.txt", "/sub/.git/x"]
    listed = {path for (method, path) in fs.calls if method == "list_dir"}
    assert str(tmp_path / ".haz") not in listed
    assert str(tmp_path / ".git") not in listed


def test_root_git_file_of_a_linked_worktree_is_not_an_input(tmp_path: Path) -> None:
    """PATH (decision): a root ``.git`` that is a file (linked worktree) is skipped too; it
    names a host path and would break location independence."""
    write(tmp_path, ".git", "gitdir: /somewhere/else\n")
    write(tmp_path, "a.txt", "a")
    with open_deriver(tmp_path) as deriver:
        files = deriver.inputs(make_task(project_dir="", inputs=("*",)))
    assert _paths(files) == ["/a.txt"]


def test_glob_without_double_star_does_not_descend_past_its_depth(tmp_path: Path) -> None:
    """PATH: ``*`` does not cross ``/``, so ``src/*.ts`` never lists subdirectories."""
    fs = CountingFs()
    write(tmp_path, "lib/src/a.ts", "a")
    write(tmp_path, "lib/src/deep/er/b.ts", "b")
    with open_deriver(tmp_path, fs=fs) as deriver:
        files = deriver.inputs(make_task(inputs=("src/*.ts",)))
    assert _paths(files) == ["/lib/src/a.ts"]
    assert fs.count("list_dir") == 1


def test_glob_walk_starts_at_the_literal_prefix(tmp_path: Path) -> None:
    """PATH: a glob walks from its literal prefix, not from the workspace root."""
    fs = CountingFs()
    write(tmp_path, "lib/src/a.c", "a")
    write(tmp_path, "other/big/b.c", "b")
    with open_deriver(tmp_path, fs=fs) as deriver:
        files = deriver.inputs(make_task(inputs=("src/**/*.c",)))
    assert _paths(files) == ["/lib/src/a.c"]
    listed = {path for (method, path) in fs.calls if method == "list_dir"}
    assert listed == {str(tmp_path / "lib" / "src")}


def test_glob_includes_symlinks_to_files_with_target_bytes_and_skips_dangling(
    tmp_path: Path,
) -> None:
    """CACHE-006: a matched symlink contributes its own path and its target's bytes; a dangling
    one (decision) contributes nothing to a glob."""
    write(tmp_path, "lib/src/real.c", b"real")
    (tmp_path / "lib" / "src" / "alias.c").symlink_to("real.c")
    (tmp_path / "lib" / "src" / "dangling.c").symlink_to("gone.c")
    assert _inputs(tmp_path, "src/*.c") == (
        InputFile(path="/lib/src/alias.c", executable=False, digest=_d(b"real"), size=len(b"real")),
        InputFile(path="/lib/src/real.c", executable=False, digest=_d(b"real"), size=len(b"real")),
    )


def test_glob_follows_symlinked_directories_and_stops_at_loops(tmp_path: Path) -> None:
    """Decision: globs follow symlinked directories, and a loop is entered only once."""
    write(tmp_path, "shared/util/u.c", b"u")
    write(tmp_path, "lib/src/a.c", b"a")
    (tmp_path / "lib" / "src" / "util").symlink_to("../../shared/util")
    (tmp_path / "lib" / "src" / "loop").symlink_to(".")  # points at its own parent
    files = _inputs(tmp_path, "src/**/*.c")
    assert _paths(files) == ["/lib/src/a.c", "/lib/src/util/u.c"]


def test_glob_and_literal_naming_the_same_file_give_one_entry(tmp_path: Path) -> None:
    """CACHE-006: duplicates across patterns are removed."""
    write(tmp_path, "lib/a.c", "a")
    assert _paths(_inputs(tmp_path, "*.c", "a.c", "/lib/*.c")) == ["/lib/a.c"]


# --- in-run memo and invalidation ----------------------------------------------------------------


def test_files_shared_by_tasks_are_listed_stat_ed_and_read_once_per_run(tmp_path: Path) -> None:
    """CACHE-006 (performance contract): one run lists a directory, stats and hashes a file
    once, however many tasks name it."""
    fs = CountingFs()
    write(tmp_path, "shared/a.h", "a")
    write(tmp_path, "shared/b.h", "b")
    tasks = [make_task(name=f"t{i}", inputs=("/shared/*.h", "/shared/a.h")) for i in range(5)]
    with open_deriver(tmp_path, fs=fs) as deriver:
        keys = {deriver.derive(t).key for t in tasks}
    assert len(keys) == 1  # same work, same key (the task name is not in the key)
    assert fs.calls["list_dir", str(tmp_path / "shared")] == 1
    for name in ("a.h", "b.h"):
        path = str(tmp_path / "shared" / name)
        assert fs.calls["open_read", path] == 1
        stats = fs.calls["stat", path] + fs.calls["lstat", path] + fs.calls["stat_entries", path]
        assert stats == 1


def test_outputs_written_makes_new_and_changed_files_visible(tmp_path: Path) -> None:
    """EXEC-007 + CACHE-006: after a producer writes, the consumer's key sees the new files."""
    write(tmp_path, "lib/gen/a.c", b"a1")
    producer = make_task(name="gen", outputs=("gen/**",))
    consumer = make_task(name="build", inputs=("gen/**/*.c",))
    with open_deriver(tmp_path) as deriver:
        before = deriver.inputs(consumer)
        write(tmp_path, "lib/gen/a.c", b"a2-longer")
        write(tmp_path, "lib/gen/sub/b.c", b"b")
        assert deriver.inputs(consumer) == before  # memoised within the run
        deriver.outputs_written(producer.outputs)
        after = deriver.inputs(consumer)
    assert after == (
        InputFile(
            path="/lib/gen/a.c", executable=False, digest=_d(b"a2-longer"), size=len(b"a2-longer")
        ),
        InputFile(path="/lib/gen/sub/b.c", executable=False, digest=_d(b"b"), size=len(b"b")),
    )


def test_outputs_written_elsewhere_keeps_the_memo(tmp_path: Path) -> None:
    """Invalidation forgets only what the written patterns cover."""
    fs = CountingFs()
    write(tmp_path, "lib/src/a.c", b"a")
    consumer = make_task(inputs=("src/*.c",))
    with open_deriver(tmp_path, fs=fs) as deriver:
        deriver.inputs(consumer)
        fs.reset()
        deriver.outputs_written([parse_pattern("/app/dist/**", project_dir="")])
        deriver.inputs(consumer)
        assert fs.count("list_dir") == 0
        assert fs.count("stat") + fs.count("lstat") + fs.count("stat_entries") == 0


def test_outputs_written_refreshes_symlinks_into_the_written_tree(tmp_path: Path) -> None:
    """Invalidation also forgets followed symlinks, whose target may be the written tree."""
    write(tmp_path, "gen/out.h", b"v1")
    write(tmp_path, "lib/keep.c", b"k")
    (tmp_path / "lib" / "gen.h").symlink_to("../gen/out.h")
    consumer = make_task(inputs=("*",))
    with open_deriver(tmp_path) as deriver:
        deriver.inputs(consumer)
        write(tmp_path, "gen/out.h", b"v2 longer")
        deriver.outputs_written([parse_pattern("/gen/out.h", project_dir="")])
        files = deriver.inputs(consumer)
    assert files[0] == InputFile(
        path="/lib/gen.h", executable=False, digest=_d(b"v2 longer"), size=len(b"v2 longer")
    )


def test_prefetch_reports_failing_tasks_and_resolves_the_rest(tmp_path: Path) -> None:
    """CACHE-006: one task's missing input does not stop the others' resolution."""
    write(tmp_path, "lib/a.c", "a")
    good = make_task(name="good", inputs=("a.c",))
    bad = make_task(name="bad", inputs=("missing.c",))
    with open_deriver(tmp_path) as deriver:
        errors = deriver.prefetch([good, bad])
        assert set(errors) == {bad.id}
        assert errors[bad.id].path == "/lib/missing.c"
        assert _paths(deriver.inputs(good)) == ["/lib/a.c"]


class _DenyingFs(CountingFs):
    """Opening one path fails with EACCES (works whatever user runs the tests)."""

    def __init__(self, denied: str) -> None:
        super().__init__()
        self.denied = denied

    def open_read(self, path: str) -> ReadableFile:
        if path == self.denied:
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return super().open_read(path)


def test_unreadable_input_is_a_key_error_naming_it(tmp_path: Path) -> None:
    """CACHE-006: an input that cannot be read fails the task, naming the path."""
    write(tmp_path, "lib/secret", b"s")
    write(tmp_path, "lib/fine", b"f")
    fs = _DenyingFs(str(tmp_path / "lib" / "secret"))
    with open_deriver(tmp_path, fs=fs) as deriver:
        with pytest.raises(InputError, match=r"input /lib/secret cannot be read: Permission"):
            deriver.inputs(make_task(inputs=("*",)))
        assert _paths(deriver.inputs(make_task(inputs=("fine",)))) == ["/lib/fine"]


# --- components ----------------------------------------------------------------------------------


def test_build_components_sorts_predecessors_and_outputs_and_sets_cwd(tmp_path: Path) -> None:
    """CACHE-007/009: predecessors by (project, task); outputs absolute, sorted, unique; cwd is
    the project dir (no leading "/")."""
    task = make_task(project="web", project_dir="packages/web", outputs=("dist/**", "a", "a"))
    d = _d(b"")
    preds = [
        PredecessorStreams(task=TaskId("lib", "gen"), stdout=d, stderr=d, outputs=d),
        PredecessorStreams(task=TaskId("core", "build"), stdout=d, stderr=d, outputs=d),
    ]
    c = build_components(task, inputs=(), predecessors=preds)
    assert [str(p.task) for p in c.predecessors] == ["core:build", "lib:gen"]
    assert c.outputs == ("/packages/web/a", "/packages/web/dist/**")
    assert c.cwd == "packages/web"
    root = build_components(make_task(project="root", project_dir=""), inputs=())
    assert root.cwd == ""


def test_reference_vector_v2_from_files_on_disk(tmp_path: Path) -> None:
    """CACHE-003..009: resolving the SPEC's v2 task from real files reproduces its key (chapter
    revision 1: the predecessor's outputs digest hashed from its files on disk, CACHE-007)."""
    write(tmp_path, "lib/src/a.c", b"int a;\n")
    write(tmp_path, "lib/src/b.h", b"int b;\n")
    write(tmp_path, "lib/gen/a.h", b"#define A 1\n")
    write(tmp_path, "lib/gen/run.sh", b"#!/bin/sh\n")
    (tmp_path / "lib/gen/a.h").chmod(0o644)
    (tmp_path / "lib/gen/run.sh").chmod(0o744)  # any x bit counts
    for hash_name, expected in [
        (HashName.BLAKE3, "8be2d0e7be1b522931e4fcc718c8c1cc0ecb1f5c4fe607924342dcbf5d8b9a2a"),
        (HashName.SHA256, "f8decc32b5341438b70a580b9f2e291d7f9a0c950d885945244c1fad8de365af"),
    ]:
        task = make_task(
            action=ShellAction(shell="sh", script="cc -c src/a.c -o out/a.o"),
            inputs=("src/*.{c,h}", "!src/*.o"),
            outputs=("out/a.o",),
            from_host=("PATH", "CC"),
            pass_through=("HOME",),
            override={"MODE": "release"},
        )
        env = {"PATH": "/usr/bin:/bin", "HOME": "/home/me"}
        with open_deriver(tmp_path, hash_name=hash_name, host_env=env) as deriver:
            pred = PredecessorStreams(
                task=TaskId("gen", "gen"),
                stdout=digest_bytes(hash_name, b"generated\n"),
                stderr=digest_bytes(hash_name, b""),
                outputs=deriver.outputs_digest(["/lib/gen/run.sh", "/lib/gen/a.h"]),
            )
            assert deriver.derive(task, [pred]).key.hex == expected
