"""Fixtures for end-to-end ``haz run`` tests: real workspaces, the real ``haz`` binary."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest

from tests.support.workspaces import write_files

HAZ = str(Path(sys.executable).parent / "haz")
PY = sys.executable


@dataclass
class Result:
    code: int
    stdout: bytes
    stderr: str
    summary: dict[str, object] | None

    @property
    def out(self) -> str:
        return self.stdout.decode(errors="replace")

    def task(self, name: str) -> dict[str, object]:
        assert self.summary is not None
        tasks = self.summary["tasks"]
        assert isinstance(tasks, list)
        for entry in tasks:
            if entry["task"] == name:
                return dict(entry)
        raise KeyError(name)

    def sources(self) -> dict[str, object]:
        assert self.summary is not None
        tasks = self.summary["tasks"]
        assert isinstance(tasks, list)
        return {t["task"]: t["source"] for t in tasks}


HazRunner = Callable[..., Result]


@pytest.fixture
def haz(tmp_path: Path) -> HazRunner:
    """Run the real ``haz`` binary; ``run`` commands get ``--summary-json`` parsed back."""
    counter = iter(range(1_000_000))

    def run(
        *args: str,
        cwd: Path,
        env: dict[str, str] | None = None,
        timeout: float = 90,
        summary: bool = True,
    ) -> Result:
        argv = [HAZ, *args]
        summary_path = tmp_path / f"summary-{next(counter)}.json"
        if summary and args and args[0] == "run" and "--dry-run" not in " ".join(args):
            argv += ["--summary-json", str(summary_path)]
        full_env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR",)}
        full_env.update(env or {})
        proc = subprocess.run(
            argv, cwd=cwd, env=full_env, capture_output=True, timeout=timeout, check=False
        )
        data = json.loads(summary_path.read_text()) if summary_path.exists() else None
        return Result(proc.returncode, proc.stdout, proc.stderr.decode(errors="replace"), data)

    return run


class WorkspaceMaker(Protocol):
    """The ``make_workspace`` fixture: write ``files`` under ``tmp_path / name``; the root."""

    def __call__(self, files: dict[str, str], name: str = "ws") -> Path: ...


@pytest.fixture
def make_workspace(tmp_path: Path) -> WorkspaceMaker:
    def make(files: dict[str, str], name: str = "ws") -> Path:
        root = tmp_path / name
        root.mkdir()
        return write_files(root, files)

    return make


def py(code: str) -> str:
    """A YAML flow list running ``code`` with this interpreter (no shell involved)."""
    return json.dumps([PY, "-c", code])
