"""Fixtures of the remote cache tests: the fake server, a local cache env, a client factory."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hazremote.cache import LocalCache
from hazremote.domain.model import RemoteMode
from hazremote.remote import RemoteConfig, RemoteTimeouts
from tests.cache.cachekit import HASH, REVISION, Env, FakeClock
from tests.remote.fakeserver import FakeServer

#: Short deadlines: a black hole or a dead server costs tests fractions of a second.
FAST = RemoteTimeouts(
    connect_s=0.5,
    lookup_s=0.5,
    transfer_s=2.0,
    upload_drain_s=5.0,
    breaker_failures=2,
    breaker_cooldown_s=0.3,
)


@pytest.fixture
def server() -> Iterator[FakeServer]:
    fake = FakeServer()
    yield fake
    fake.stop()


def config_for(
    url: str, *, mode: RemoteMode = RemoteMode.READ_WRITE, timeouts: RemoteTimeouts = FAST
) -> RemoteConfig:
    return RemoteConfig(
        url=url,
        target=url.removeprefix("grpc://"),
        mode=mode,
        namespace="main",
        timeouts=timeouts,
    )


@pytest.fixture
def make_env(tmp_path: Path) -> Callable[[str], Env]:
    """A fresh workspace + local cache per name (two clones share nothing locally)."""

    def make(name: str) -> Env:
        base = tmp_path / name
        workspace = base / "ws"
        workspace.mkdir(parents=True)
        clock = FakeClock()
        cache = LocalCache(base / "cache", hash_name=HASH, chapter_revision=REVISION, clock=clock)
        return Env(tmp=base, workspace=workspace, cache=cache, clock=clock)

    return make


# The end-to-end fixtures of tests/run (the real `haz` binary, workspaces under tmp_path).
from tests.run.conftest import haz, make_workspace  # noqa: E402, F401
