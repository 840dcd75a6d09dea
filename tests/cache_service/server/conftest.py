"""A module-scoped in-process cache server (real gRPC over loopback TCP, memory storage)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cache_service.server.serverkit import ServerThread, running_server


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    with running_server() as running:
        yield running
