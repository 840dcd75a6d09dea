"""Fixtures of the remote cache tests: the real server over fault-injecting memory stores,
the lying server, a local cache env, a client factory."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zstandard

from cache_service.config import Limits
from cache_service.identity import Authenticator
from hazremote.cache import LocalCache
from hazremote.domain.model import RemoteMode
from hazremote.remote import RemoteConfig, RemoteTimeouts
from tests.cache.cachekit import HASH, REVISION, Env, FakeClock
from tests.cache_service.server.serverkit import ServerThread, running_server, server_config
from tests.remote.lyingserver import LyingServer
from tests.support.faultstore import CountingAccess, Faults, FaultyBlobStore, FaultyManifestStore

#: Short deadlines: a black hole or a dead server costs tests fractions of a second.
FAST = RemoteTimeouts(
    connect_s=0.5,
    lookup_s=0.5,
    transfer_s=2.0,
    upload_drain_s=5.0,
    breaker_failures=2,
    breaker_cooldown_s=0.3,
)


@dataclass
class CacheServer:
    """The real ``serve()`` in-process on loopback, over memory stores behind
    :class:`~tests.support.faultstore.Faults` (armed by the test through ``faults``)."""

    thread: ServerThread
    faults: Faults

    @property
    def url(self) -> str:
        return f"grpc://{self.thread.target}"

    def manifests(self) -> dict[tuple[str, bytes], bytes]:
        """Every stored manifest document by (namespace, raw key)."""
        store = self.thread.manifest_store
        found: dict[tuple[str, bytes], bytes] = {}
        for info in store.iterate():
            document = store.get(info.namespace, info.hash_name, info.key)
            if document is not None:
                found[(info.namespace, info.key.raw)] = document
        return found

    def blobs(self) -> dict[bytes, bytes]:
        """Every stored blob, uncompressed, by raw digest."""
        leaf = self.thread.blob_leaf
        found: dict[bytes, bytes] = {}
        for info in leaf.iterate():
            reader = leaf.open_read(info.ref)
            assert reader is not None
            with reader:
                frame = reader.read()
            found[info.ref.digest.raw] = (
                zstandard.ZstdDecompressor().decompressobj().decompress(frame)
            )
        return found


#: Starts a real server: ``Limits`` fields as keywords, ``authenticator`` to check tokens.
ServerFactory = Callable[..., CacheServer]


@pytest.fixture
def make_server() -> Iterator[ServerFactory]:
    with contextlib.ExitStack() as stack:

        def start(*, authenticator: Authenticator | None = None, **limits: Any) -> CacheServer:
            faults = Faults()
            thread = stack.enter_context(
                running_server(
                    server_config(limits=Limits(**limits)),
                    authenticator=CountingAccess(faults, authenticator),
                    below_verification=lambda leaf: FaultyBlobStore(leaf, faults),
                    around_manifests=lambda store: FaultyManifestStore(store, faults),
                )
            )
            stack.callback(faults.heal)  # before the stop: hung storage calls end at once
            return CacheServer(thread=thread, faults=faults)

        yield start


@pytest.fixture
def server(make_server: ServerFactory) -> CacheServer:
    """A healthy real server (default limits) whose storage faults a test may arm."""
    return make_server()


@pytest.fixture
def liar() -> Iterator[LyingServer]:
    """A server that breaks the protocol on purpose (see :mod:`tests.remote.lyingserver`)."""
    lying = LyingServer()
    yield lying
    lying.stop()


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
