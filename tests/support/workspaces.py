"""Generators of realistic workspaces for tests and benchmarks."""

from __future__ import annotations

import random
from pathlib import Path

__all__ = ["write_files", "write_generated_workspace"]

TASK_NAMES = ("build", "test", "lint", "typecheck", "package")


def write_files(root: Path, files: dict[str, str]) -> Path:
    """Write ``{relative path: text}`` under ``root``; returns ``root``."""
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def write_generated_workspace(
    root: Path,
    *,
    projects: int,
    tasks_per_project: int,
    rng: random.Random,
    max_deps: int = 3,
) -> list[str]:
    """A workspace of ``projects`` x ``tasks_per_project`` tasks with an acyclic random DAG.

    Project ``pNNNN`` may depend on ``build`` of lower-numbered projects only, and its own
    tasks form a chain (``test`` needs ``build`` …), so the graph is acyclic by construction.
    Returns the project names.
    """
    names = [f"p{i:04d}" for i in range(projects)]
    tags = ["frontend", "backend", "lib", "heavy"]
    (root / ".haz").mkdir(parents=True, exist_ok=True)
    (root / ".haz" / "workspace.yml").write_text(
        "projects: [packages/*]\nconcurrency: { default: auto, tags: { heavy: 1 } }\n"
    )
    task_names = TASK_NAMES[:tasks_per_project]
    for index, name in enumerate(names):
        deps = sorted(rng.sample(names[:index], min(index, rng.randint(0, max_deps))))
        lines = [f"name: {name}", f"tags: [{rng.choice(tags)}]", "tasks:"]
        for t_index, task in enumerate(task_names):
            lines += [
                f"  {task}:",
                f"    command: [python3, tools/{task}.py, src]",
                '    inputs: ["src/**/*.ts", "!src/**/*.test.ts", package.json]',
                f'    outputs: ["out/{task}/**"]',
            ]
            task_deps = [f"{d}:build" for d in deps] if task == "build" else []
            if t_index > 0:
                task_deps.append(f"~:{task_names[t_index - 1]}")
            if task_deps:
                lines.append(f"    deps: [{', '.join(task_deps)}]")
            lines.append("    env: { from_host: [NODE_ENV], pass_through: [PATH] }")
        project_dir = root / "packages" / name
        project_dir.mkdir(parents=True, exist_ok=True)
        (project_dir / "haz.yml").write_text("\n".join(lines) + "\n")
    return names
