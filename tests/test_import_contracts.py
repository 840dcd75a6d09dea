"""Issue 14 (item 1): the dependency rule the build enforces (``lint-imports`` in ``make lint``).

import-linter cannot match part of a module name, so the contract on private modules lists
them; these tests keep that list complete and show that each contract is checked.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import cast

REPO = Path(__file__).resolve().parent.parent
_PRIVATE = "the service and the worker use only public modules of hazremote"


def _contracts() -> dict[str, dict[str, object]]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    return {c["name"]: c for c in config["tool"]["importlinter"]["contracts"]}


def _private_modules() -> set[str]:
    found = set()
    for path in (REPO / "hazremote").rglob("_*.py"):
        if path.name.startswith("__") or "wire" in path.relative_to(REPO).parts:
            continue
        found.add(".".join(path.relative_to(REPO).with_suffix("").parts))
    for path in (REPO / "hazremote").rglob("_*/__init__.py"):
        found.add(".".join(path.parent.relative_to(REPO).parts))
    return found


def test_every_private_module_of_hazremote_is_forbidden_to_the_service_and_worker() -> None:
    """Issue 14: a new ``_module`` in hazremote is out of bounds for cache_service/worker."""
    listed = set(cast("list[str]", _contracts()[_PRIVATE]["forbidden_modules"]))  # TOML
    assert listed == _private_modules()


def test_a_forbidden_import_breaks_the_contracts(tmp_path: Path) -> None:
    """Issue 14: ``lint-imports`` fails on a service module importing a private client one."""
    copy = tmp_path / "repo"
    for name in ("hazremote", "cache_service", "worker"):
        shutil.copytree(REPO / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", copy / "pyproject.toml")
    private = sorted(_private_modules())[0]
    (copy / "cache_service" / "sneaky.py").write_text(f"import {private}\n", encoding="utf-8")
    lint_imports = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run(
        [str(lint_imports), "--no-cache"],
        cwd=copy,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(copy), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"cache_service.sneaky -> {private}" in result.stdout


def test_no_private_module_is_imported_from_another_subpackage() -> None:
    """Issue 14: inside hazremote too, a ``_module`` is private to its own subpackage."""
    import grimp

    graph = grimp.build_graph("hazremote", cache_dir=None)
    leaks = []
    for module in sorted(graph.modules):
        owner = module.rpartition(".")[0]
        if not module.rpartition(".")[2].startswith("_") or module.endswith("__init__"):
            continue
        for importer in sorted(graph.find_modules_that_directly_import(module)):
            if importer != owner and not importer.startswith(owner + "."):
                leaks.append(f"{importer} -> {module}")
    assert leaks == []
