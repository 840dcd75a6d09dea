"""The synthetic monorepo of the run benchmarks, written for haz and for Turborepo alike.

N packages with 10 source files each and a random DAG of dependencies (each package depends
on up to three lower-numbered ones); every package has one ``build`` task that concatenates its
sources into ``dist/out.js`` and prints a few lines. The same shell script is the task in both
tools, so they do the same work.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

BUILD_SH = """#!/bin/sh
# The build step of every synthetic package (shared by haz and turbo).
mkdir -p dist
cat src/*.ts > dist/out.js
echo "building $(basename "$PWD")"
echo "  $(ls src | wc -l) modules"
echo "done"
"""


def write_synthetic(
    root: Path, *, packages: int, seed: int = 1, inputs_key: bool = True
) -> list[str]:
    """Write the workspace; ``inputs_key=False`` leaves ``inputs`` out of every task, so each
    hashes its project's files (PATH default inputs: git tracked + untracked, not ignored)."""
    rng = random.Random(seed)
    names = [f"pkg{i:04d}" for i in range(packages)]
    root.mkdir(parents=True, exist_ok=True)
    (root / "build.sh").write_text(BUILD_SH)
    (root / "build.sh").chmod(0o755)
    (root / ".haz").mkdir(exist_ok=True)
    (root / ".haz" / "workspace.yml").write_text("projects: [packages/*]\n")
    (root / "package.json").write_text(
        json.dumps(
            {
                "name": "synthetic",
                "private": True,
                "workspaces": ["packages/*"],
                "packageManager": "npm@10.9.2",
            },
            indent=2,
        )
    )
    (root / "turbo.json").write_text(
        json.dumps(
            {
                "$schema": "https://turborepo.com/schema.json",
                "tasks": {
                    "build": {
                        "dependsOn": ["^build"],
                        "inputs": ["src/**"],
                        "outputs": ["dist/**"],
                    }
                },
            },
            indent=2,
        )
    )
    for index, name in enumerate(names):
        deps = sorted(rng.sample(names[:index], min(index, rng.randint(0, 3))))
        pkg = root / "packages" / name
        (pkg / "src").mkdir(parents=True, exist_ok=True)
        for f in range(10):
            body = "\n".join(f"export const v{f}_{k} = {rng.randint(0, 10**6)};" for k in range(20))
            (pkg / "src" / f"m{f}.ts").write_text(body + "\n")
        (pkg / "haz.yml").write_text(
            "tasks:\n"
            "  build:\n"
            "    command: [sh, ../../build.sh]\n"
            + ("    inputs: ['src/**', /build.sh]\n" if inputs_key else "")
            + "    outputs: ['dist/**']\n"
            "    env: { pass_through: [PATH] }\n"
            + (f"    deps: [{', '.join(f'{d}:build' for d in deps)}]\n" if deps else "")
        )
        (pkg / "package.json").write_text(
            json.dumps(
                {
                    "name": name,
                    "version": "1.0.0",
                    "scripts": {"build": "sh ../../build.sh"},
                    "dependencies": dict.fromkeys(deps, "1.0.0"),
                },
                indent=2,
            )
        )
    return names
