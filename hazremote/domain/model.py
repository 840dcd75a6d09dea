"""The loaded workspace as immutable values.

Spec coverage:
* Configuration files (§1) — every task field and workspace setting, with its default.
* MUTEX-001..007 — :class:`MutexSpec` (global or project scope, exclusive or shared).
Out of scope: parsing YAML (``hazremote.config``) and resolving references (``hazremote.graph``).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from hazremote.domain.patterns import PathPattern
from hazremote.domain.refs import TaskId, TaskRef

__all__ = [
    "DEFAULT_GRACE_PERIOD_S",
    "Action",
    "CacheSettings",
    "CommandAction",
    "ConcurrencySettings",
    "EnvSpec",
    "ExecutionSettings",
    "HashName",
    "MutexMode",
    "MutexSpec",
    "Origin",
    "OutputMode",
    "Overlay",
    "Project",
    "ProjectFiles",
    "RefEntry",
    "RemoteMode",
    "RemotePolicy",
    "RemoteSettings",
    "ShellAction",
    "Task",
    "TaskSpec",
    "TlsSettings",
    "Workspace",
    "WorkspaceSettings",
    "frozen_map",
]

DEFAULT_GRACE_PERIOD_S = 10.0


def frozen_map(items: Mapping[str, str] | None = None) -> Mapping[str, str]:
    """A read-only mapping (values in the model are immutable)."""
    return MappingProxyType(dict(sorted((items or {}).items())))


@dataclass(frozen=True, slots=True, kw_only=True)
class Origin:
    """Where a value came from, for CFG-040 diagnostics."""

    file: str
    key_path: str
    line: int | None


class HashName(enum.Enum):
    """CACHE-002: the workspace hash function."""

    BLAKE3 = "blake3"
    SHA256 = "sha256"


class OutputMode(enum.Enum):
    LIVE = "live"
    BUFFERED = "buffered"


class RemoteMode(enum.Enum):
    OFF = "off"
    READ_ONLY = "read-only"
    READ_WRITE = "read-write"


class RemotePolicy(enum.Enum):
    """RX-001: ``never | auto | always`` for ``remote.execute`` and a task's ``remote``."""

    NEVER = "never"
    AUTO = "auto"
    ALWAYS = "always"


class MutexMode(enum.Enum):
    EXCLUSIVE = "exclusive"
    SHARED = "shared"


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandAction:
    """CACHE-005 tag 0x01: an argv run without a shell."""

    argv: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ShellAction:
    """CACHE-005 tag 0x02: a script run as ``<shell> -c <script>``."""

    shell: str
    script: str


Action = CommandAction | ShellAction


@dataclass(frozen=True, slots=True, kw_only=True)
class MutexSpec:
    """MUTEX-001..002. ``project_scoped`` is the ``~:name`` form."""

    name: str
    project_scoped: bool = False
    mode: MutexMode = MutexMode.EXCLUSIVE

    def hold_key(self, project: str) -> tuple[str, str]:
        """The identity of the lock this task takes when it runs in ``project``."""
        return (project if self.project_scoped else "", self.name)


@dataclass(frozen=True, slots=True, kw_only=True)
class EnvSpec:
    """CACHE-008 and EXEC-008: which variables reach the process and which are hashed."""

    from_host: tuple[str, ...] = ()
    pass_through: tuple[str, ...] = ()
    override: Mapping[str, str] = field(default_factory=frozen_map)


@dataclass(frozen=True, slots=True, kw_only=True)
class RefEntry:
    """A reference in ``deps``/``weakDeps`` with where it was written."""

    ref: TaskRef
    origin: Origin


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskSpec:
    """A task as declared in a ``haz.yml`` or an overlay (patterns still project-relative).

    ``inputs``/``outputs`` are resolved per project by the graph builder, since an overlay
    task is attached to several projects. ``inputs`` is None when the key is absent: the task
    then hashes its project's files (PATH, :class:`ProjectFiles`); ``()`` means no inputs.
    """

    name: str
    action: Action
    inputs: tuple[str, ...] | None = None
    outputs: tuple[str, ...] = ()
    deps: tuple[RefEntry, ...] = ()
    weak_deps: tuple[RefEntry, ...] = ()
    mutex: MutexSpec | None = None
    env: EnvSpec = field(default_factory=EnvSpec)
    cache: bool = True
    remote: RemotePolicy | None = None
    platform: Mapping[str, str] = field(default_factory=frozen_map)
    timeout_s: float | None = None
    origin: Origin


@dataclass(frozen=True, slots=True, kw_only=True)
class ProjectFiles:
    """PATH: the default inputs of a task without an ``inputs`` key — its project's files.

    In a git work tree the files git tracks or would track (untracked, not ignored), outside
    one every file, under ``dir`` but not under ``nested`` (the directories of other projects
    below it); never ``.haz/``, ``.git/`` nor the task's own outputs (input resolution
    applies those).

    Attributes:
        dir: The project directory, workspace-relative (``""`` for the root).
        nested: Workspace-relative directories of the other projects below ``dir``, sorted.
    """

    dir: str
    nested: tuple[str, ...] = ()

    @property
    def absolute(self) -> str:
        """The project directory as a workspace-absolute path (``""`` for the root)."""
        return f"/{self.dir}" if self.dir else ""

    def contains(self, path: str) -> bool:
        """True when the workspace-absolute ``path`` lies in the project, not a nested one."""
        base = self.absolute
        if not path.startswith(base + "/"):
            return False
        return not any(path.startswith(f"/{n}/") for n in self.nested)


@dataclass(frozen=True, slots=True, kw_only=True)
class Task:
    """A task attached to a project: the node payload of the task graph.

    ``inputs`` are the declared patterns (``()`` for ``inputs: []`` and for a task without the
    key); ``default_inputs`` is set exactly when the key is absent (PATH: the project's files).
    Code that reads ``inputs`` must consider ``default_inputs`` too.
    """

    id: TaskId
    project_dir: str
    spec: TaskSpec
    inputs: tuple[PathPattern, ...]
    outputs: tuple[PathPattern, ...]
    default_inputs: ProjectFiles | None = None

    @property
    def action(self) -> Action:
        return self.spec.action


@dataclass(frozen=True, slots=True, kw_only=True)
class Project:
    """A project: ``dir`` is workspace-relative (``""`` for the root)."""

    name: str
    dir: str
    tags: tuple[str, ...]
    tasks: Mapping[str, TaskSpec]
    file: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Overlay:
    """A ``.haz/tasks/<name>.yml`` file: tasks attached to projects carrying a tag."""

    name: str
    file: str
    tags_filter: tuple[str, ...]
    tasks: Mapping[str, TaskSpec]


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheSettings:
    hash: HashName = HashName.BLAKE3
    clean_max_age_s: float | None = None
    clean_max_size: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ConcurrencySettings:
    """EXEC-004/005. ``default`` None means ``auto`` (the CPU count)."""

    default: int | None = None
    tags: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutionSettings:
    grace_period_s: float = DEFAULT_GRACE_PERIOD_S


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsSettings:
    ca: str | None = None
    cert: str | None = None
    key: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoteSettings:
    """SPEC §1 ``remote:``; resolution against flags and environment happens in the CLI."""

    url: str | None = None
    namespace: str | None = None
    mode: RemoteMode | None = None
    token_env: str | None = None
    tls: TlsSettings = field(default_factory=TlsSettings)
    execute: RemotePolicy | None = None
    platform: Mapping[str, str] = field(default_factory=frozen_map)


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkspaceSettings:
    lock: bool = False
    cache: CacheSettings = field(default_factory=CacheSettings)
    concurrency: ConcurrencySettings = field(default_factory=ConcurrencySettings)
    output: OutputMode = OutputMode.LIVE
    execution: ExecutionSettings = field(default_factory=ExecutionSettings)
    remote: RemoteSettings = field(default_factory=RemoteSettings)


@dataclass(frozen=True, slots=True, kw_only=True)
class Workspace:
    """A loaded, validated workspace. ``projects`` are in name order."""

    root: Path
    settings: WorkspaceSettings
    projects: tuple[Project, ...]
    overlays: tuple[Overlay, ...]

    def project(self, name: str) -> Project | None:
        for project in self.projects:
            if project.name == name:
                return project
        return None
