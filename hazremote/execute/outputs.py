"""Finding the files a task materialised: its output patterns against the workspace on disk.

Spec coverage:
* CACHE-017 — :func:`materialised_outputs`: the regular files, and links to them, matched now.
* CACHE-017 — a dangling link is no output; links are stored by :mod:`hazremote.cache.collect`.
* EXEC-020 — the same list feeds the output-overlap check (:mod:`.claims`).
* PATH-001..016 — each walk starts at a literal prefix, never entering ``.haz/`` or ``.git/``.
* Issue 13 — ``.haz-restore-*`` staging names are never collected; stale ones are removed.
Out of scope: hashing and copying (:mod:`hazremote.cache.collect`, which also holds the walk).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from hazremote.cache.collect import matching_files
from hazremote.domain.patterns import PathPattern

__all__ = ["materialised_outputs"]


def materialised_outputs(root: Path, patterns: Iterable[PathPattern]) -> tuple[str, ...]:
    """Workspace-absolute paths of the files matched by ``patterns`` now, sorted, unique
    (:func:`hazremote.cache.collect.matching_files`)."""
    return matching_files(root, patterns)
