"""Location independence: keys depend on workspace-absolute paths only (CACHE-006/009)."""

from __future__ import annotations

import shutil
from pathlib import Path

from hazremote.domain.model import CommandAction, HashName
from hazremote.keys.components import KeyComponents
from tests.keys.keykit import make_task, open_deriver, write


def _workspace(root: Path) -> None:
    write(root, ".haz/workspace.yml", "projects: [lib, app]\n")
    write(root, "lib/src/a.c", b"int a;\n")
    write(root, "lib/src/sub/b.c", b"int b;\n")
    write(root, "lib/build.sh", b"#!/bin/sh\n", mode=0o755)
    write(root, "shared/config.json", b"{}\n")
    (root / "lib" / "config.json").symlink_to("../shared/config.json")
    write(root, "app/main.c", b"int main;\n")


TASKS = [
    make_task(project="lib", inputs=("src/**/*.c", "build.sh", "config.json"), outputs=("out/**",)),
    make_task(project="app", name="link", inputs=("*.c", "/lib/src/*.c"), outputs=("bin/app",)),
    make_task(
        project="root",
        project_dir="",
        name="all",
        inputs=("**",),
        action=CommandAction(argv=("make",)),
    ),
]


def _keys(root: Path, hash_name: HashName) -> list[tuple[str, KeyComponents]]:
    with open_deriver(root, hash_name=hash_name, host_env={"HOME": str(root)}) as deriver:
        return [
            (derived.key.hex, derived.components)
            for derived in (deriver.derive(task) for task in TASKS)
        ]


def test_two_copies_at_different_paths_have_identical_keys(tmp_path: Path) -> None:
    """CACHE-006/009: a workspace and its copy elsewhere derive the same keys, and no
    component mentions the host path."""
    first = tmp_path / "checkout-one"
    _workspace(first)
    second = tmp_path / "elsewhere" / "deeper" / "two"
    shutil.copytree(first, second, symlinks=True)
    for hash_name in HashName:
        here = _keys(first, hash_name)
        there = _keys(second, hash_name)
        assert here == there
        for _key, components in here:
            assert str(tmp_path) not in repr(components)
    all_inputs = [f.path for f in _keys(first, HashName.BLAKE3)[2][1].inputs]
    assert "/lib/config.json" in all_inputs
    assert not any(p.startswith("/.haz/") for p in all_inputs)
