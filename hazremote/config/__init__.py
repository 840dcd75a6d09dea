"""Workspace discovery and configuration loading: YAML files → :mod:`hazremote.domain.model`.

Spec coverage:
* DISC-001 — :func:`find_workspace_root`.
* DISC-003, DISC-005, DISC-006 — project modes and names (:func:`load_workspace`).
* DISC-007 — :func:`bearing_project`.
* CFG-040 — :func:`load_workspace` raises one ConfigError with every diagnostic of the load.
* ID-001..003, PATH-001..016, REF-001..008 — names, patterns and references checked as read.
Out of scope: overlay merge, reference resolution and graph checks (``hazremote.graph``);
resolving remote settings against flags and environment (``hazremote.cli``).
"""

from typing import TYPE_CHECKING, Any

from hazremote.config._discovery import bearing_project, find_workspace_root
from hazremote.config._trace import Trace

if TYPE_CHECKING:
    from hazremote.config._loader import load_workspace, load_workspace_traced


def __getattr__(name: str) -> Any:
    # The loader (and PyYAML with it) is imported on first use: a command served by a
    # workspace snapshot never needs it.
    if name in ("load_workspace", "load_workspace_traced"):
        from hazremote.config import _loader

        return getattr(_loader, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Trace",
    "bearing_project",
    "find_workspace_root",
    "load_workspace",
    "load_workspace_traced",
]
