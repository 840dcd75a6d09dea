"""Fixtures for the cache tests: a cache and a workspace under tmp_path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from hazremote.cache import LocalCache
from tests.cache.cachekit import HASH, REVISION, Env, FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_cache(tmp_path: Path, clock: FakeClock) -> Callable[..., LocalCache]:
    def make(**kwargs: object) -> LocalCache:
        options: dict[str, object] = {"hash_name": HASH, "chapter_revision": REVISION}
        options["clock"] = clock
        options.update(kwargs)
        return LocalCache(tmp_path / "cache", **options)  # type: ignore[arg-type]

    return make


@pytest.fixture
def env(tmp_path: Path, make_cache: Callable[..., LocalCache], clock: FakeClock) -> Env:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    return Env(tmp=tmp_path, workspace=workspace, cache=make_cache(), clock=clock)
