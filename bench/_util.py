"""Shared helpers of the benchmark scripts: timing medians, a work directory, a trash."""

from __future__ import annotations

import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path

WORK = Path(__file__).resolve().parent / ".work"


def work_dir(name: str) -> Path:
    """A fresh directory under ``bench/.work`` (git-ignored)."""
    path = WORK / name
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def median_seconds(
    fn: Callable[[], object], *, runs: int = 5, setup: Callable[[], object] | None = None
) -> float:
    """Median wall time of ``fn`` over ``runs`` runs (``setup`` runs untimed before each)."""
    samples = []
    for _ in range(runs):
        if setup is not None:
            setup()
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


class Trash:
    """Moves a clone's cache and outputs aside instead of deleting them between rounds.

    On ext4 the inode allocator skips inodes deleted in the last seconds (``recently_deleted``)
    and pays kernel CPU for every one it skips, so a replay right after deleting the previous
    one's thousands of files measured the deletion, growing round after round. A CI machine
    restoring a fresh clone has no such graveyard: what is set aside is deleted at the end.
    """

    def __init__(self, root: Path) -> None:
        self._root = root
        self._count = 0

    def take(self, path: Path) -> None:
        if path.exists():
            self._root.mkdir(parents=True, exist_ok=True)
            self._count += 1
            path.rename(self._root / f"{self._count}-{path.name}")

    def take_outputs(self, clone: Path) -> None:
        for dist in (clone / "packages").glob("*/dist"):
            self.take(dist)

    def empty(self) -> None:
        shutil.rmtree(self._root, ignore_errors=True)
