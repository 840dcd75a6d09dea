"""Where a workspace keeps its local state, and the objects commands open over it.

Spec coverage:
* CACHE-010..013 — the cache lives in ``<root>/.haz/cache``; ``HAZ_CACHE_DIR`` moves it.
* CACHE-011 — the ``haz why`` task index lives in ``<root>/.haz/state/why`` (never uploaded).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from hazremote.cache.index import TaskIndex
from hazremote.cache.local import LocalCache, resolve_cache_root
from hazremote.domain.model import Workspace
from hazremote.keys.framing import CHAPTER_REVISION

__all__ = ["open_cache", "open_index", "state_dir"]


def state_dir(workspace: Workspace) -> Path:
    return workspace.root / ".haz" / "state"


def open_cache(workspace: Workspace, environ: Mapping[str, str] = os.environ) -> LocalCache:
    return LocalCache(
        resolve_cache_root(workspace.root, environ),
        hash_name=workspace.settings.cache.hash,
        chapter_revision=CHAPTER_REVISION,
    )


def open_index(workspace: Workspace) -> TaskIndex:
    return TaskIndex(state_dir(workspace) / "why")
