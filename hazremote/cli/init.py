"""``haz init [--yes]`` — create ``.haz/workspace.yml`` for an existing repository (SPEC §5).

It never overwrites: an existing ``.haz/workspace.yml`` is an error (exit 2). It proposes the
directories that look like projects (a ``package.json``, ``pyproject.toml``, ``Cargo.toml``,
``go.mod`` or ``Makefile``), and writes a ``haz.yml`` next to each that lacks one — with tasks
taken from ``package.json`` scripts, the one place a project already names its tasks — so
the explicit project list is valid at once (DISC-005). Without ``--yes``: on a terminal it
asks; without a terminal it lists what it would write and exits 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from hazremote.domain.names import is_valid_name
from hazremote.errors import UsageError

MARKERS = ("package.json", "pyproject.toml", "Cargo.toml", "go.mod", "Makefile")
SKIP_DIRS = frozenset({".git", ".haz", "node_modules", ".venv", "venv", "target", "dist", "build"})
MAX_DEPTH = 3


def find_candidates(root: Path) -> list[str]:
    """Workspace-relative directories (``.`` for the root) holding a project marker."""
    found: list[str] = []

    def walk(directory: Path, depth: int) -> Iterator[Path]:
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError:
            return
        if any(e.name in MARKERS and e.is_file() for e in entries):
            yield directory
        if depth >= MAX_DEPTH:
            return
        for entry in entries:
            name = entry.name
            if entry.is_dir(follow_symlinks=False) and name not in SKIP_DIRS and name[0] != ".":
                yield from walk(Path(entry.path), depth + 1)

    for directory in walk(root, 0):
        rel = directory.relative_to(root).as_posix()
        found.append("." if rel == "." else rel)
    return found


def _yaml_str(value: str) -> str:
    return json.dumps(value)  # JSON strings are valid YAML scalars


def project_file(directory: Path) -> str:
    """A starting ``haz.yml`` for ``directory``: its npm scripts become tasks."""
    lines = ["# haz project file: see README.md for every task field", "tasks:"]
    package = directory / "package.json"
    scripts: dict[str, object] = {}
    if package.is_file():
        try:
            loaded = json.loads(package.read_text())
            if isinstance(loaded, dict) and isinstance(loaded.get("scripts"), dict):
                scripts = loaded["scripts"]
        except (OSError, ValueError):
            scripts = {}
    names = [n for n in sorted(scripts) if is_valid_name(n)]
    for name in names:
        lines += [
            f"  {name}:",
            f"    command: [npm, run, {_yaml_str(name)}]",
            "    inputs: [package.json, 'src/**']",
        ]
    if not names:
        lines[-1] = "tasks: {}"
    return "\n".join(lines) + "\n"


def workspace_file(candidates: list[str]) -> str:
    items = ", ".join(_yaml_str(c) for c in candidates)
    return (
        "# haz workspace file: see README.md for every setting\n"
        f"projects: [{items}]\n"
        "cache: { hash: blake3 }\n"
        "concurrency: { default: auto }\n"
        "output: { mode: live }\n"
    )


def plan(root: Path) -> dict[Path, str]:
    """Files ``haz init`` would write in ``root``, with their contents."""
    candidates = find_candidates(root)
    files: dict[Path, str] = {}
    if not candidates:
        candidates = ["."]
    for rel in candidates:
        directory = root if rel == "." else root / rel
        if not (directory / "haz.yml").exists():
            files[directory / "haz.yml"] = project_file(directory)
    files[root / ".haz" / "workspace.yml"] = workspace_file(candidates)
    if not (root / ".haz" / ".gitignore").exists():
        # The cache, the stat cache, the why index and the lock are local state: never commit.
        files[root / ".haz" / ".gitignore"] = "cache/\nstate/\ntmp/\nlock\nlocks/\n"
    return files


def run(args: argparse.Namespace) -> int:
    root = Path(args.workspace_root or os.getcwd()).resolve()
    target = root / ".haz" / "workspace.yml"
    if target.exists():
        raise UsageError(f"{target} already exists; haz init never overwrites it")
    files = plan(root)
    out = sys.stderr
    print("haz init would write:", file=out)
    for path in files:
        print(f"  {path.relative_to(root).as_posix()}", file=out)
    if not args.yes:
        if not (sys.stdin.isatty() and sys.stderr.isatty()):
            print("no terminal to confirm on: re-run with --yes to write these files", file=out)
            return 2
        answer = input("Write these files? [y/N] ").strip().lower()
        if answer not in ("y", "yes"):
            print("nothing written", file=out)
            return 2
    for path, content in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "x") as handle:  # "x": never overwrite, even in a race
            handle.write(content)
    print(f"wrote {len(files)} file(s); run `haz check --workspace` next", file=out)
    return 0
