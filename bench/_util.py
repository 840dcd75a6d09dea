"""Shared helpers of the benchmark scripts: timing medians and a work directory."""

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
