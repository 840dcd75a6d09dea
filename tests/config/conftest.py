"""Fixtures for the configuration tests: real workspaces written into ``tmp_path``."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

WriteTree = Callable[[Mapping[str, str]], Path]


@pytest.fixture
def write_tree(tmp_path: Path) -> WriteTree:
    """Write ``{relative path: text}`` under a fresh workspace root and return the root.

    Texts are dedented, so tests can indent YAML naturally. A path ending in ``/`` creates an
    empty directory.
    """
    root = tmp_path / "ws"

    def write(files: Mapping[str, str]) -> Path:
        for rel, text in files.items():
            target = root / rel
            if rel.endswith("/"):
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(textwrap.dedent(text).lstrip("\n"))
        root.mkdir(parents=True, exist_ok=True)
        return root

    return write
