"""``haz init [--yes]`` — create ``.haz/workspace.yml`` for an existing repository.

Projects come from :mod:`hazremote.cli._init_repo`; a ``haz.yml`` is written beside each
project that lacks one, with its ``package.json`` scripts as tasks.

Spec coverage:
* ``haz init`` (§5) — proposal, confirmation, never overwriting, exit 2 without a terminal.
* DISC-005, DISC-006, ID-001..003 — literal project paths; valid, unique names.
* REF-001..008 — generated ``deps`` are ``project:task`` references to existing tasks.
* PATH-001..016 — no ``inputs`` key is generated: the default hashes the project's files.
Out of scope: reading the repository (``_init_repo``), tasks for ecosystems other than npm
(a commented example is written instead).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import yaml

from hazremote.cli._init_repo import (
    CARGO_TOML,
    GO_MOD,
    MAKEFILE,
    PACKAGE_JSON,
    PYPROJECT,
    NpmPackage,
    Skipped,
    Survey,
    assign_names,
    npm_tasks,
    package_manager,
    read_npm_package,
    survey,
)
from hazremote.domain.names import is_valid_name, sanitize_name
from hazremote.errors import UsageError

__all__ = ["Plan", "plan", "run"]

#: Where generated files send their reader: haz's documentation, never the repository's own
#: README (which is the user's).
DOCS_POINTER: Final = "see `haz --help`\n# and docs/configuration.md in the haz remote repository"
#: Skipped directories shown on screen and in workspace.yml; the rest are counted.
MAX_SKIPPED_SHOWN: Final = 25
_EXAMPLES: Final = {
    CARGO_TOML: "build: {command: [cargo, build], env: {pass_through: [PATH, HOME]}}",
    GO_MOD: "test: {command: [go, test, ./...], env: {pass_through: [PATH, HOME]}}",
    PYPROJECT: "test: {command: [python, -m, pytest], env: {pass_through: [PATH]}}",
    MAKEFILE: "build: {command: [make], env: {pass_through: [PATH]}}",
}


@dataclass(frozen=True, kw_only=True, slots=True)
class Plan:
    """What ``haz init`` would do: the files with their contents, and what it left out."""

    files: Mapping[Path, str]
    survey: Survey


@dataclass(frozen=True, kw_only=True, slots=True)
class _Project:
    dir: str  # "." for the root
    name: str
    package: NpmPackage | None
    builds: bool  # has a `build` task another project's `build` may depend on


def _yaml_str(value: str) -> str:
    return json.dumps(value)  # JSON strings are valid YAML scalars


def _existing(path: Path) -> tuple[str | None, frozenset[str]]:
    """The ``name:`` and task names of an existing ``haz.yml`` (best effort: it is theirs)."""
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return None, frozenset()
    if not isinstance(loaded, dict):
        return None, frozenset()
    name = loaded.get("name")
    tasks = loaded.get("tasks")
    task_names = (
        frozenset(k for k in tasks if isinstance(k, str))
        if isinstance(tasks, dict)
        else frozenset()
    )
    return (name if isinstance(name, str) and is_valid_name(name) else None), task_names


def _default_name(rel: str) -> str:
    """The name DISC-006 gives a project without ``name:``."""
    return "root" if rel == "." else sanitize_name(rel.rsplit("/", 1)[-1])


def _project_file(
    project: _Project,
    *,
    root: Path,
    by_package: Mapping[str, _Project],
    import_scripts: bool,
) -> str:
    directory = root if project.dir == "." else root / project.dir
    lines = [f"# haz project file written by `haz init`: for every task field, {DOCS_POINTER}."]
    if project.name != _default_name(project.dir):
        lines.append(f"name: {_yaml_str(project.name)}")
    package = project.package
    if package is None or not import_scripts:
        if package is not None:
            lines.append(
                "# The package.json scripts of a JavaScript workspace root are not imported:"
            )
            lines.append("# they usually run the packages' own.")
        markers = [m for m in _EXAMPLES if (directory / m).is_file()]
        lines.append("tasks: {}")
        if markers:
            lines.append("# for example:")
            lines.append("# tasks:")
            lines += [f"#   {_EXAMPLES[m]}" for m in markers]
        return "\n".join(lines) + "\n"

    tasks, hooks = npm_tasks(package)
    tool = package_manager(directory, root)
    lines += [
        f"# Tasks from package.json scripts, run with {tool}. No task has an inputs: key, so each",
        "# hashes the project's files (what git tracks or would track); add inputs: to narrow.",
        "# A cache hit restores only declared outputs: list what a cached task writes.",
        "# Tasks start with an empty environment: pass_through gives them PATH and HOME unhashed.",
    ]
    if hooks:
        lines.append("# Not tasks: lifecycle hooks the package manager runs around their base")
        lines.append(f"# script, install or publish: {', '.join(hooks)}")
    if not tasks:
        lines.append("tasks: {}")
        return "\n".join(lines) + "\n"
    lines.append("tasks:")
    for task in tasks:
        lines += [
            f"  {task.task}:",
            f"    command: [{tool}, run, {_yaml_str(task.script)}]",
        ]
        if task.task == "build":
            deps = sorted(
                f"{dep.name}:build"
                for dependency in package.dependencies
                if (dep := by_package.get(dependency)) is not None
                and dep is not project
                and dep.builds
            )
            if deps:
                lines.append(f"    deps: [{', '.join(deps)}]")
            if package.build_outputs and task.cache:
                patterns = ", ".join(_yaml_str(p) for p in package.build_outputs)
                lines.append(f"    outputs: [{patterns}]   # where package.json points (main, ...)")
        if not task.cache:
            lines.append(
                "    cache: false   # a server, watcher or tree-changing script: always runs"
            )
        lines.append("    env: {pass_through: [PATH, HOME]}")
    return "\n".join(lines) + "\n"


def _skipped_lines(skipped: tuple[Skipped, ...], prefix: str) -> list[str]:
    lines = [f"{prefix}{s.dir}: {s.reason}" for s in skipped[:MAX_SKIPPED_SHOWN]]
    if len(skipped) > MAX_SKIPPED_SHOWN:
        lines.append(f"{prefix}... and {len(skipped) - MAX_SKIPPED_SHOWN} more")
    return lines


def _workspace_file(found: Survey, projects: list[str]) -> str:
    lines = [f"# haz workspace file written by `haz init`: for every setting, {DOCS_POINTER}."]
    if found.declarations:
        lines.append(f"# Projects from: {', '.join(found.declarations)}; others from marker files.")
    if found.skipped:
        lines.append("# Not proposed (add a directory to projects: if it is one of yours):")
        lines += _skipped_lines(found.skipped, "#   ")
    items = ", ".join(_yaml_str(c) for c in projects)
    lines += [
        f"projects: [{items}]",
        "cache: { hash: blake3 }",
        "concurrency: { default: auto }",
        "output: { mode: live }",
    ]
    return "\n".join(lines) + "\n"


def plan(root: Path) -> Plan:
    """Files ``haz init`` would write in ``root``, with their contents."""
    found = survey(root)
    dirs = list(found.projects) or ["."]
    existing: dict[str, tuple[str | None, frozenset[str]]] = {}
    for rel in dirs:
        file = (root if rel == "." else root / rel) / "haz.yml"
        if file.exists():
            existing[rel] = _existing(file)
    fixed = {rel: name or _default_name(rel) for rel, (name, _) in existing.items()}
    names = assign_names(root, dirs, fixed)

    projects: list[_Project] = []
    for rel in dirs:
        directory = root if rel == "." else root / rel
        package = read_npm_package(directory) if (directory / PACKAGE_JSON).is_file() else None
        importing = not (rel == "." and found.js_workspace_root)
        if rel in existing:
            builds = "build" in existing[rel][1]
        else:
            builds = (
                package is not None
                and importing
                and any(t.task == "build" for t in npm_tasks(package)[0])
            )
        projects.append(_Project(dir=rel, name=names[rel], package=package, builds=builds))
    by_package: dict[str, _Project] = {}
    for project in projects:
        if project.package is not None and project.package.name is not None:
            by_package.setdefault(project.package.name, project)

    files: dict[Path, str] = {}
    for project in projects:
        directory = root if project.dir == "." else root / project.dir
        if project.dir not in existing:
            files[directory / "haz.yml"] = _project_file(
                project,
                root=root,
                by_package=by_package,
                import_scripts=not (project.dir == "." and found.js_workspace_root),
            )
    files[root / ".haz" / "workspace.yml"] = _workspace_file(found, dirs)
    if not (root / ".haz" / ".gitignore").exists():
        # The cache, the stat cache, the why index and the lock are local state: never commit.
        files[root / ".haz" / ".gitignore"] = "cache/\nstate/\ntmp/\nlock\nlocks/\n"
    return Plan(files=files, survey=found)


def run(args: argparse.Namespace) -> int:
    root = Path(args.workspace_root or os.getcwd()).resolve()
    target = root / ".haz" / "workspace.yml"
    if target.exists():
        raise UsageError(f"{target} already exists; haz init never overwrites it")
    proposal = plan(root)
    out = sys.stderr
    if proposal.survey.declarations:
        print(f"projects from: {', '.join(proposal.survey.declarations)}", file=out)
    for line in _skipped_lines(proposal.survey.skipped, "skipped: "):
        print(line, file=out)
    print("haz init would write:", file=out)
    for path in proposal.files:
        print(f"  {path.relative_to(root).as_posix()}", file=out)
    if not args.yes:
        if not (sys.stdin.isatty() and sys.stderr.isatty()):
            print("no terminal to confirm on: re-run with --yes to write these files", file=out)
            return 2
        answer = input("Write these files? [y/N] ").strip().lower()
        if answer not in ("y", "yes"):
            print("nothing written", file=out)
            return 2
    for path, content in proposal.files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "x") as handle:  # "x": never overwrite, even in a race
            handle.write(content)
    print(f"wrote {len(proposal.files)} file(s); run `haz check --workspace` next", file=out)
    return 0
