"""Finding the files a task materialised: its output patterns against the workspace on disk.

Spec coverage:
* CACHE-012/017 — the files to store after a successful run are the regular files (or
  symlinks to regular files) matched by the task's output patterns; the cache stores a
  relative link into the other outputs as a link, any other as its content (issue 12). A
  dangling link is no output.
* EXEC-020 — the same list feeds the scheduler's output-overlap check.
* PATH — the walk starts at each pattern's literal prefix and never enters the workspace's
  ``.haz/`` or ``.git/``.
* Issue 13 — a name reserved for haz's restore staging files (``.haz-restore-*``,
  :mod:`hazremote.cache.staging`) is never collected, nor entered as a directory; the stale
  ones a killed restore left in a walked directory are removed on the way.
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
