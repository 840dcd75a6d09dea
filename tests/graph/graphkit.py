"""Builders of in-memory workspaces for graph tests (no YAML: the loader is tested elsewhere).

Origins follow one convention so that tests can assert them: a task declared at line ``L`` of
``file`` has origin ``(file, tasks.<name>, L)``; its ``deps[i]`` are at line ``L + 1 + i`` and
its ``weakDeps[i]`` at line ``L + 1 + len(deps) + i``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from hazremote.domain.model import (
    CommandAction,
    Origin,
    Overlay,
    Project,
    RefEntry,
    TaskSpec,
    Workspace,
    WorkspaceSettings,
)
from hazremote.domain.refs import TaskId, parse_ref

__all__ = ["T", "generated_workspace", "overlay", "project", "tid", "workspace"]


def tid(text: str) -> TaskId:
    project, _, task = text.partition(":")
    return TaskId(project, task)


@dataclass(frozen=True, kw_only=True)
class T:
    """A task draft; ``materialise`` gives the TaskSpec once the declaring file is known."""

    name: str
    line: int = 1
    deps: tuple[str, ...] = ()
    weak: tuple[str, ...] = ()
    inputs: tuple[str, ...] | None = ()  # None: no `inputs` key (PATH default inputs)
    outputs: tuple[str, ...] = ()

    def materialise(self, file: str) -> TaskSpec:
        def entries(refs: tuple[str, ...], key: str, first_line: int) -> tuple[RefEntry, ...]:
            return tuple(
                RefEntry(
                    ref=parse_ref(text),
                    origin=Origin(
                        file=file, key_path=f"tasks.{self.name}.{key}[{i}]", line=first_line + i
                    ),
                )
                for i, text in enumerate(refs)
            )

        return TaskSpec(
            name=self.name,
            action=CommandAction(argv=("true",)),
            inputs=self.inputs,
            outputs=self.outputs,
            deps=entries(self.deps, "deps", self.line + 1),
            weak_deps=entries(self.weak, "weakDeps", self.line + 1 + len(self.deps)),
            origin=Origin(file=file, key_path=f"tasks.{self.name}", line=self.line),
        )


def _tasks(file: str, drafts: tuple[T | str, ...]) -> dict[str, TaskSpec]:
    specs = [(T(name=d) if isinstance(d, str) else d).materialise(file) for d in drafts]
    return {spec.name: spec for spec in specs}


def project(
    name: str, *tasks: T | str, dir: str | None = None, tags: tuple[str, ...] = ()
) -> Project:
    """A project in ``dir`` (default ``packages/<name>``); bare strings are plain tasks."""
    directory = f"packages/{name}" if dir is None else dir
    file = f"{directory}/haz.yml" if directory else "haz.yml"
    return Project(name=name, dir=directory, tags=tags, tasks=_tasks(file, tasks), file=file)


def overlay(name: str, tags_filter: tuple[str, ...], *tasks: T | str) -> Overlay:
    file = f".haz/tasks/{name}.yml"
    return Overlay(name=name, file=file, tags_filter=tags_filter, tasks=_tasks(file, tasks))


def workspace(*projects: Project, overlays: tuple[Overlay, ...] = ()) -> Workspace:
    return Workspace(
        root=Path("/nonexistent-workspace"),
        settings=WorkspaceSettings(),
        projects=tuple(sorted(projects, key=lambda p: p.name)),
        overlays=overlays,
    )


TASK_NAMES = ("build", "test", "lint", "typecheck", "package")
TAGS = ("frontend", "backend", "lib", "heavy")


def generated_workspace(
    *, projects: int, rng: random.Random
) -> tuple[Workspace, dict[str, set[str]]]:
    """``projects`` x 5 tasks, acyclic by construction, with tags and two overlays.

    Project ``pNNNN`` has ``build`` (deps on ``build`` of up to three lower-numbered projects,
    inputs ``src/**`` and the upstream ``dist``), ``test`` and ``package`` (``deps: [~:build]``)
    and ``typecheck`` (``weakDeps: [~:build]``); ``lint`` comes from an overlay for every tag
    (a more specific ``lint`` overlay for ``heavy``). Returns the workspace and, for checking,
    every task id → its expected hard predecessors (as ``project:task`` strings).
    """
    names = [f"p{i:04d}" for i in range(projects)]
    built: list[Project] = []
    expected: dict[str, set[str]] = {}
    for index, name in enumerate(names):
        upstream = sorted(rng.sample(names[:index], min(index, rng.randint(0, 3))))
        tags = (rng.choice(TAGS),)
        build_deps = tuple(f"{u}:build" for u in upstream)
        built.append(
            project(
                name,
                T(
                    name="build",
                    line=3,
                    deps=build_deps,
                    inputs=(
                        "src/**",
                        "!src/**/*.test.ts",
                        *(f"/packages/{u}/dist/**" for u in upstream),
                    ),
                    outputs=("dist/**",),
                ),
                T(name="test", line=10, deps=("~:build",), inputs=("src/**/*.test.ts",)),
                T(name="typecheck", line=14, weak=("~:build",), inputs=("src/**/*.ts",)),
                T(name="package", line=18, deps=("~:build",), outputs=(f"/out/{name}.tgz",)),
                tags=tags,
            )
        )
        expected[f"{name}:build"] = set(build_deps)
        expected[f"{name}:test"] = {f"{name}:build"}
        expected[f"{name}:typecheck"] = set()
        expected[f"{name}:package"] = {f"{name}:build"}
        expected[f"{name}:lint"] = set()
    overlays = (
        overlay("lint-all", TAGS, T(name="lint", inputs=("src/**",))),
        overlay("lint-heavy", ("heavy",), T(name="lint", inputs=("src/**", "heavy.cfg"))),
    )
    return workspace(*built, overlays=overlays), expected
