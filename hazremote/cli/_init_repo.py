"""What ``haz init`` learns from a repository: its projects, packages and scripts.

The repository root's workspace declarations come first (``package.json`` ``workspaces``,
``pnpm-workspace.yaml``, Cargo ``[workspace]``, ``go.work``, uv ``[tool.uv.workspace]``) and
are authoritative for their ecosystem; marker files of undeclared ecosystems are guessed from
to a depth of 3, and a directory that looks vendored or like a fixture is reported as skipped.

Spec coverage:
* ``haz init`` (§5) — project discovery (declarations, then markers), npm script import.
* DISC-005 — proposed directories are literal paths, so the written ``projects:`` selects them.
* ID-001..003, DISC-006 — :func:`assign_names` gives every project a valid, unique name.
Out of scope: writing files (``hazremote.cli.init``), nested workspace declarations, Poetry,
Cargo's implicit members, and yarn's ``nohoist``.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import yaml

from hazremote.domain.names import MAX_NAME_BYTES, is_valid_name, sanitize_name
from hazremote.domain.patterns import GLOB_CHARS, is_glob, parse_pattern
from hazremote.errors import PatternError

__all__ = [
    "MARKERS",
    "NpmPackage",
    "NpmScript",
    "Skipped",
    "Survey",
    "assign_names",
    "looks_vendored",
    "npm_tasks",
    "package_manager",
    "read_npm_package",
    "survey",
]

PACKAGE_JSON: Final = "package.json"
PYPROJECT: Final = "pyproject.toml"
CARGO_TOML: Final = "Cargo.toml"
GO_MOD: Final = "go.mod"
MAKEFILE: Final = "Makefile"
MARKERS: Final = (PACKAGE_JSON, PYPROJECT, CARGO_TOML, GO_MOD, MAKEFILE)
#: Never walked: version control, haz's own state, installed dependencies and build trees.
SKIP_DIRS: Final = frozenset(
    {".git", ".haz", "node_modules", "bower_components", ".venv", "venv", "__pycache__"}
    | {"target", "dist", "build", "out"}
)
#: A declared glob may well name a package called ``build``: only these are never entered.
_DECLARED_SKIP: Final = frozenset({".git", ".haz", "node_modules", "bower_components"})
MARKER_DEPTH: Final = 3
#: How deep a ``**`` in a declaration is followed (declarations name real package trees).
DECLARED_DEPTH: Final = 12
#: Path segments that mark a directory as vendored code or test data (compared lower-cased).
_VENDORED: Final = frozenset(
    {"vendor", "vendors", "vendored", "third_party", "third-party", "thirdparty", "3rdparty"}
    | {"external", "externals", "extern", "deps", "testdata", "test-data", "test_data"}
    | {"fixtures", "fixture", "__fixtures__", "__tests__", "__mocks__"}
)


def looks_vendored(rel: str) -> bool:
    """True when a segment of ``rel`` names vendored code or test fixtures (``test*`` too)."""
    for segment in rel.lower().split("/"):
        if segment in _VENDORED or segment.startswith("test"):
            return True
    return False


@dataclass(frozen=True, kw_only=True, slots=True)
class Skipped:
    """A directory ``haz init`` saw and did not propose, and why (shown to the user)."""

    dir: str
    reason: str


@dataclass(frozen=True, kw_only=True, slots=True)
class Survey:
    """The projects of a repository as ``haz init`` proposes them.

    Attributes:
        projects: Workspace-relative project directories (``.`` for the root), sorted.
        skipped: Directories seen and not proposed, with the reason, sorted.
        declarations: The workspace declarations read (``"package.json workspaces"``, ...).
        js_workspace_root: True when the root declares a JavaScript workspace: its scripts
            orchestrate the packages' own, so they are not imported as tasks.
    """

    projects: tuple[str, ...]
    skipped: tuple[Skipped, ...]
    declarations: tuple[str, ...]
    js_workspace_root: bool


@dataclass(kw_only=True, slots=True)
class _Members:
    """Accumulates the members of every declaration (mutable while surveying only)."""

    found: dict[str, str] = field(default_factory=dict)  # dir -> declaration
    skipped: dict[str, str] = field(default_factory=dict)


# -- reading manifests ------------------------------------------------------------------------


def _load_json(path: Path) -> dict[str, object] | None:
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return loaded if isinstance(loaded, dict) else None


def _load_toml(path: Path) -> dict[str, object] | None:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return None


def _strings(value: object) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _table(value: object) -> Mapping[str, object]:
    return value if isinstance(value, dict) else {}


def _go_work_uses(text: str) -> list[str]:
    """The directories of a ``go.work`` file's ``use`` directives (block and single forms)."""
    uses: list[str] = []
    in_block = False
    for raw in text.splitlines():
        line = raw.split("//", 1)[0].strip()
        if not line:
            continue
        if in_block:
            if line == ")":
                in_block = False
            else:
                uses.append(line.strip('"`'))
            continue
        words = line.split(None, 1)
        if words[0] != "use" or len(words) == 1:
            continue
        rest = words[1].strip()
        if rest == "(":
            in_block = True
        elif rest.startswith("(") and rest.endswith(")"):  # use ( ./a )
            uses += [w.strip('"`') for w in rest[1:-1].split()]
        else:
            uses.append(rest.strip('"`'))
    return uses


# -- expanding declared members ---------------------------------------------------------------


def _normalise(entry: str) -> str | None:
    """A declaration entry as a workspace-relative path (``""`` = root), or None if outside."""
    text = entry.strip().replace("\\", "/")
    if text.startswith("/") or re.match(r"^[A-Za-z]:", text):
        return None
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if ".." in parts:
        return None
    return "/".join(parts)


def _walk_dirs(
    root: Path, start: str, depth: int, *, skip: frozenset[str] = SKIP_DIRS
) -> Iterator[str]:
    """Workspace-relative directories at or below ``start``, ``depth`` levels deep at most.

    Hidden directories and those in ``skip`` are not entered; symbolic links are not followed.
    """
    base = root / start if start else root
    if not base.is_dir():
        return
    stack = [(start, 0)]
    while stack:
        rel, level = stack.pop()
        yield rel
        if level >= depth:
            continue
        try:
            entries = list(os.scandir(root / rel if rel else root))
        except OSError:
            continue
        for entry in entries:
            name = entry.name
            if name in skip or name.startswith(".") or not entry.is_dir(follow_symlinks=False):
                continue
            stack.append((f"{rel}/{name}" if rel else name, level + 1))


def _excluded(rel: str, excludes: Sequence[str]) -> bool:
    """True when an exclusion names ``rel`` or one of its ancestors (Cargo, uv, ``!`` forms)."""
    candidates = ["/" + "/".join(rel.split("/")[: i + 1]) for i in range(rel.count("/") + 1)]
    for pattern in excludes:
        try:
            parsed = parse_pattern(pattern, project_dir="")
        except PatternError:
            continue
        if any(parsed.matches(c) for c in candidates):
            return True
    return False


def _expand(
    root: Path,
    *,
    entries: Sequence[str],
    excludes: Sequence[str],
    manifest: str,
    declaration: str,
    into: _Members,
) -> None:
    """Add the directories ``entries`` select (holding ``manifest``) to ``into``.

    A ``!`` entry excludes, wherever it stands in the list (pnpm's reading; npm applies the
    same patterns). Globs expand to existing directories holding the manifest; a literal entry
    that does not exist or lacks the manifest is reported, not proposed.
    """
    positives = [e for e in entries if not e.startswith("!")]
    raw_negatives = [e.removeprefix("!") for e in excludes]
    raw_negatives += [e[1:] for e in entries if e.startswith("!")]
    negatives = [n for n in (_normalise(x) for x in raw_negatives) if n]
    for entry in positives:
        rel = _normalise(entry)
        if rel is None:
            into.skipped.setdefault(
                entry, f"{declaration} names it, but it is outside the repository"
            )
            continue
        shown = rel or "."
        if not is_glob(rel):
            directory = root / rel if rel else root
            if rel and _excluded(rel, negatives):
                into.skipped.setdefault(shown, f"{declaration} excludes it")
                continue
            if (directory / manifest).is_file():
                into.found.setdefault(shown, declaration)
            elif directory.is_dir():
                into.skipped.setdefault(shown, f"{declaration} names it, but it has no {manifest}")
            else:
                into.skipped.setdefault(shown, f"{declaration} names it, but it does not exist")
            continue
        try:
            pattern = parse_pattern(rel, project_dir="")
        except PatternError as error:
            into.skipped.setdefault(entry, f"{declaration}: cannot expand the pattern ({error})")
            continue
        prefix = pattern.literal_prefix.lstrip("/")
        tail = rel.split("/")[prefix.count("/") + 1 if prefix else 0 :]
        depth = DECLARED_DEPTH if "**" in rel else len(tail)
        for candidate in _walk_dirs(root, prefix, depth, skip=_DECLARED_SKIP):
            if not candidate or not pattern.matches("/" + candidate):
                continue
            if not (root / candidate / manifest).is_file():
                continue
            if _excluded(candidate, negatives):
                into.skipped.setdefault(candidate, f"{declaration} excludes it")
            else:
                into.found.setdefault(candidate, declaration)


@dataclass(frozen=True, kw_only=True, slots=True)
class _Declaration:
    """One workspace declaration at the root: which directories it names, with which manifest."""

    what: str  # shown to the user: "package.json workspaces"
    manifest: str
    entries: tuple[str, ...]
    excludes: tuple[str, ...] = ()


def _members_declaration(
    what: str, manifest: str, table: Mapping[str, object], *, root_is_member: bool
) -> _Declaration:
    """A TOML ``members``/``exclude`` workspace table (Cargo, uv) as a declaration."""
    members = _strings(table.get("members"))
    if root_is_member:
        members.append(".")
    return _Declaration(
        what=what,
        manifest=manifest,
        entries=tuple(members),
        excludes=tuple(_strings(table.get("exclude"))),
    )


def _declarations(root: Path) -> list[_Declaration]:
    """The workspace declarations at ``root``, in a fixed order."""
    found: list[_Declaration] = []
    package = _load_json(root / PACKAGE_JSON)
    if package is not None and "workspaces" in package:
        spec = package["workspaces"]  # ["packages/*"] or {packages: [...], nohoist: [...]}
        entries = spec if isinstance(spec, list) else _table(spec).get("packages")
        found.append(
            _Declaration(
                what="package.json workspaces",
                manifest=PACKAGE_JSON,
                entries=tuple(_strings(entries)),
            )
        )
    pnpm = root / "pnpm-workspace.yaml"
    if pnpm.is_file():
        try:
            loaded = yaml.safe_load(pnpm.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError, UnicodeDecodeError):
            loaded = None
        found.append(
            _Declaration(
                what="pnpm-workspace.yaml packages",
                manifest=PACKAGE_JSON,
                entries=tuple(_strings(_table(loaded).get("packages"))),
            )
        )
    cargo = _load_toml(root / CARGO_TOML)
    if cargo is not None and isinstance(cargo.get("workspace"), dict):
        # a root [package] is a member of its own workspace
        found.append(
            _members_declaration(
                "Cargo.toml [workspace] members",
                CARGO_TOML,
                _table(cargo["workspace"]),
                root_is_member="package" in cargo,
            )
        )
    go_work = root / "go.work"
    if go_work.is_file():
        try:
            uses = _go_work_uses(go_work.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError):
            uses = []
        found.append(_Declaration(what="go.work use", manifest=GO_MOD, entries=tuple(uses)))
    pyproject = _load_toml(root / PYPROJECT)
    uv = _table(_table(_table(pyproject).get("tool")).get("uv")).get("workspace")
    if pyproject is not None and isinstance(uv, dict):
        # uv: a root with [project] is a workspace member
        found.append(
            _members_declaration(
                "[tool.uv.workspace] members", PYPROJECT, uv, root_is_member="project" in pyproject
            )
        )
    return found


# -- guessing from markers --------------------------------------------------------------------


def _marker_dirs(root: Path) -> Iterator[tuple[str, frozenset[str]]]:
    """Directories (``""`` = root) up to :data:`MARKER_DEPTH` deep, with their marker files."""
    for rel in sorted(_walk_dirs(root, "", MARKER_DEPTH)):
        try:
            names = {e.name for e in os.scandir(root / rel if rel else root) if e.is_file()}
        except OSError:
            continue
        markers = frozenset(names.intersection(MARKERS))
        if markers:
            yield rel, markers


def survey(root: Path) -> Survey:
    """Propose the projects of the repository at ``root`` (declarations first, then markers)."""
    members = _Members()
    declarations = _declarations(root)
    for declaration in declarations:
        _expand(
            root,
            entries=declaration.entries,
            excludes=declaration.excludes,
            manifest=declaration.manifest,
            declaration=declaration.what,
            into=members,
        )
    declared_manifests = {d.manifest for d in declarations}
    for rel, markers in _marker_dirs(root):
        shown = rel or "."
        if shown in members.found or shown in members.skipped:
            continue
        undeclared = markers - declared_manifests
        if not undeclared:
            if rel:  # the root of a declared workspace is no project of its own
                kinds = ", ".join(sorted(markers))
                members.skipped[shown] = f"its {kinds} is in no workspace declaration"
            continue
        if rel and looks_vendored(rel):
            members.skipped[shown] = "looks vendored/fixture; add it to projects: if it is yours"
            continue
        members.found[shown] = "marker files"
    for shown in list(members.found):
        if any(ch in GLOB_CHARS for ch in shown):  # DISC-005 would read it as a glob
            del members.found[shown]
            members.skipped[shown] = "its path holds a glob character (* ? [ {)"
    return Survey(
        projects=tuple(sorted(members.found)),
        skipped=tuple(Skipped(dir=d, reason=r) for d, r in sorted(members.skipped.items())),
        declarations=tuple(d.what for d in declarations),
        js_workspace_root=PACKAGE_JSON in declared_manifests,
    )


# -- npm packages and scripts -----------------------------------------------------------------

#: npm lifecycle scripts: npm itself runs them around install, pack, publish and version.
LIFECYCLE: Final = frozenset(
    {"preinstall", "install", "postinstall", "preuninstall", "uninstall", "postuninstall"}
    | {"prepublish", "prepublishOnly", "publish", "postpublish", "prepare", "preprepare"}
    | {"postprepare", "prepack", "postpack", "preversion", "version", "postversion"}
    | {"dependencies", "preshrinkwrap", "shrinkwrap", "postshrinkwrap"}
)
#: Scripts that run servers or watchers, or change the tree: always run, never stored.
_UNCACHED_NAMES: Final = frozenset(
    {"dev", "develop", "start", "serve", "server", "watch", "preview", "storybook", "stop"}
    | {"restart", "format", "fmt", "clean", "deploy", "release"}
)
_UNCACHED_PARTS: Final = frozenset({"dev", "start", "serve", "watch", "fix", "write"})
_CHECK_PARTS: Final = frozenset({"check", "verify", "lint", "ci"})
_DEPENDENCY_FIELDS: Final = (
    "dependencies",
    "devDependencies",
    "peerDependencies",
    "optionalDependencies",
)
#: Directories a ``build`` script conventionally writes (``main: dist/index.js``).
_BUILD_DIRS: Final = ("dist", "build", "out")


def _is_uncached(script: str) -> bool:
    lowered = script.lower()
    if lowered in _UNCACHED_NAMES or lowered.endswith("fix"):
        return True
    parts = set(re.split(r"[:_-]", lowered))
    if len(parts) == 1:
        return False
    if parts & {"format", "fmt"} and not parts & _CHECK_PARTS:  # format:all, not format:check
        return True
    return bool(parts & _UNCACHED_PARTS)


@dataclass(frozen=True, kw_only=True, slots=True)
class NpmScript:
    """A ``package.json`` script imported as a task."""

    task: str  # the haz task name (ID rules)
    script: str  # the script name, as ``npm run`` takes it
    cache: bool


@dataclass(frozen=True, kw_only=True, slots=True)
class NpmPackage:
    """What ``haz init`` reads from one ``package.json``."""

    name: str | None
    scripts: tuple[str, ...]
    dependencies: frozenset[str]
    build_outputs: tuple[str, ...]  # e.g. ("dist/**",), from main/module/types/exports/bin


def _paths_in(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _paths_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from _paths_in(item)


def read_npm_package(directory: Path) -> NpmPackage | None:
    """The package in ``directory``, or None without a readable ``package.json``."""
    loaded = _load_json(directory / PACKAGE_JSON)
    if loaded is None:
        return None
    scripts = _table(loaded.get("scripts"))
    dependencies: set[str] = set()
    for key in _DEPENDENCY_FIELDS:
        dependencies.update(k for k in _table(loaded.get(key)) if isinstance(k, str))
    outputs: set[str] = set()
    for key in ("main", "module", "types", "typings", "exports", "bin"):
        for path in _paths_in(loaded.get(key)):
            first = path.removeprefix("./").split("/", 1)
            if len(first) == 2 and first[0] in _BUILD_DIRS:
                outputs.add(f"{first[0]}/**")
    name = loaded.get("name")
    return NpmPackage(
        name=name if isinstance(name, str) and name else None,
        scripts=tuple(k for k, v in scripts.items() if isinstance(k, str) and isinstance(v, str)),
        dependencies=frozenset(dependencies),
        build_outputs=tuple(sorted(outputs)),
    )


def npm_tasks(package: NpmPackage) -> tuple[list[NpmScript], list[str]]:
    """The scripts of ``package`` that become tasks, and the names of the lifecycle hooks left.

    ``pre<x>``/``post<x>`` run with ``<x>`` itself (npm, yarn 1, pnpm with pre/post scripts
    enabled), and the lifecycle scripts run around install/pack/publish: neither is a task.
    Script names outside the ID alphabet (``build:types``) become ``build-types``.
    """
    present = set(package.scripts)
    hooks: list[str] = []
    tasks: list[NpmScript] = []
    taken: set[str] = set()
    for script in sorted(package.scripts):
        base = (
            script[3:]
            if script.startswith("pre")
            else script[4:]
            if script.startswith("post")
            else None
        )
        if script in LIFECYCLE or (base and base in present):
            hooks.append(script)
            continue
        task = script if is_valid_name(script) else sanitize_name(script)
        if not task:
            hooks.append(script)
            continue
        task = _unique(task, taken)
        taken.add(task)
        tasks.append(NpmScript(task=task, script=script, cache=not _is_uncached(script)))
    return tasks, hooks


def _unique(name: str, taken: set[str] | Mapping[str, object]) -> str:
    if name not in taken:
        return name
    for n in range(2, 10_000):
        suffix = f"-{n}"
        candidate = name[: MAX_NAME_BYTES - len(suffix)] + suffix
        if candidate not in taken:
            return candidate
    raise AssertionError("unreachable: fewer than 10,000 names are taken")


def package_manager(directory: Path, root: Path) -> str:
    """The package manager a project uses: its lockfile (own, then the root's), else npm."""
    for place in (directory, root):
        if (place / "pnpm-lock.yaml").is_file():
            return "pnpm"
        if (place / "yarn.lock").is_file():
            return "yarn"
        if (place / "bun.lockb").is_file() or (place / "bun.lock").is_file():
            return "bun"
        if (place / "package-lock.json").is_file() or (place / "npm-shrinkwrap.json").is_file():
            return "npm"
    declared = _table(_load_json(root / PACKAGE_JSON)).get("packageManager")
    if isinstance(declared, str):  # corepack's "pnpm@9.1.0"
        tool = declared.split("@", 1)[0]
        if tool in ("pnpm", "yarn", "npm", "bun"):
            return tool
    return "npm"


# -- names ------------------------------------------------------------------------------------


def _manifest_names(root: Path, rel: str) -> tuple[tuple[str, ...], str | None]:
    """Preferred names for the project at ``rel``, best first (before uniqueness).

    Returns:
        The choices, and the choice that is an npm name without its scope (``web`` of
        ``@acme/web``) when there is one: it yields to another package named exactly that.
    """
    directory = root / rel if rel != "." else root
    choices: list[str] = []
    unscoped = None
    package = _load_json(directory / PACKAGE_JSON)
    if package is not None and isinstance(package.get("name"), str):
        full = str(package["name"])
        if "/" in full:
            unscoped = sanitize_name(full.rsplit("/", 1)[-1])
            choices.append(unscoped)  # "@acme/web": "web", then "acme-web"
        choices.append(full)
    cargo = _table(_load_toml(directory / CARGO_TOML)).get("package")
    if isinstance(cargo, dict) and isinstance(cargo.get("name"), str):
        choices.append(str(cargo["name"]))
    project = _table(_load_toml(directory / PYPROJECT)).get("project")
    if isinstance(project, dict) and isinstance(project.get("name"), str):
        choices.append(str(project["name"]))
    if rel != ".":
        choices += [rel.rsplit("/", 1)[-1], rel]
    names = [sanitize_name(c) for c in choices]
    return tuple(dict.fromkeys(n for n in names if is_valid_name(n))), unscoped


def assign_names(root: Path, projects: Iterable[str], fixed: Mapping[str, str]) -> dict[str, str]:
    """A valid, unique haz name for every project directory.

    Args:
        root: The repository root.
        projects: Project directories (``.`` = root).
        fixed: Names that cannot change (from an existing ``haz.yml``), by directory.

    The root is ``root`` (DISC-006). Others take their package's name (npm without its scope,
    Cargo, ``pyproject.toml``), else their directory's basename; names that two projects would
    share fall back to the next choice (the scoped npm name, then the path), then a suffix.
    """
    names: dict[str, str] = dict(fixed)
    used = set(fixed.values())
    pending = [p for p in sorted(projects) if p not in fixed]
    found = {p: _manifest_names(root, p) for p in pending if p != "."}
    exact = {c[0] for c, unscoped in found.values() if c and c[0] != unscoped}
    choices: dict[str, tuple[str, ...]] = {}
    for rel, (options, unscoped) in found.items():
        yields = options[:1] == (unscoped,) and unscoped in exact and len(options) > 1
        choices[rel] = options[1:] if yields else options
    if "." in pending:
        choices["."] = ("root",)
    level = 0
    while pending:
        wanted: dict[str, list[str]] = {}
        for rel in pending:
            options = choices[rel] or ("project",)
            wanted.setdefault(options[min(level, len(options) - 1)], []).append(rel)
        left: list[str] = []
        for name, dirs in wanted.items():
            last_choice = all(level >= len(choices[d]) - 1 for d in dirs)
            if len(dirs) == 1 and name not in used:
                names[dirs[0]] = name
                used.add(name)
            elif last_choice:
                for rel in dirs:  # out of choices: a suffix, in path order
                    unique = _unique(name, used)
                    names[rel] = unique
                    used.add(unique)
            else:
                left += dirs
        pending = sorted(left)
        level += 1
    return names
