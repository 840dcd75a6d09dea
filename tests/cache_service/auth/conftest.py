"""A module-scoped in-process server guarded by the tokens file of :mod:`.authkit`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cache_service.auth import TokenAuthority
from tests.cache_service.auth.authkit import tokens_yaml, write_tokens
from tests.cache_service.server.serverkit import ServerThread, running_server


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    path = write_tokens(tmp_path_factory.mktemp("tokens") / "tokens.yaml", tokens_yaml())
    with running_server(authenticator=TokenAuthority.open(path)) as running:
        yield running
