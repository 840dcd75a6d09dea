"""Anonymous read-only access, and reloading the tokens file without a restart (SEC-002)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from cache_service.auth import TokenAuthority, hash_secret
from hazremote.wire.haz.remote.v1 import cache_pb2
from tests.cache_service.auth.authkit import (
    bearer,
    code_of,
    get_request,
    stored_manifest,
    tokens_yaml,
    write_tokens,
)
from tests.cache_service.server.serverkit import (
    BLAKE3,
    digest_of,
    put_request,
    running_server,
    write_chunks,
)

DENIED = grpc.StatusCode.PERMISSION_DENIED
OK = grpc.StatusCode.OK


def _eventually(condition: Callable[[], bool], what: str) -> None:
    """Wait (bounded) for the file watcher; not a timing assertion, only a deadline."""
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_anonymous_access_is_read_only_and_limited_to_its_namespaces(tmp_path: Path) -> None:
    """§5: ``anonymous: {namespaces: [main]}`` lets tokenless callers read ``main`` (and blobs)
    but never write; a wrong token is still UNAUTHENTICATED."""
    path = write_tokens(tmp_path / "tokens.yaml", tokens_yaml(anonymous="{namespaces: [main]}"))
    with running_server(authenticator=TokenAuthority.open(path)) as server:
        manifest = stored_manifest(server, "anon")
        server.manifests().PutManifest(put_request(manifest), metadata=bearer("ci-main"))
        reply = server.manifests().GetManifest(get_request(manifest.key.raw, "main"))
        assert (reply.found, reply.found_in_namespace) == (True, "main")
        get = server.manifests().GetManifest
        assert code_of(get, get_request(manifest.key.raw, "pr-1")) == DENIED
        assert code_of(server.manifests().PutManifest, put_request(manifest)) == DENIED
        data = os.urandom(32)
        assert code_of(server.content().WriteBlob, iter(write_chunks(data))) == DENIED
        read = cache_pb2.BatchReadBlobsRequest(hash_function=BLAKE3, digests=[digest_of(data)])
        assert code_of(server.content().BatchReadBlobs, read) == OK
        caps = server.capabilities().GetCapabilities(
            cache_pb2.GetCapabilitiesRequest(namespace="main")
        )
        assert (caps.token_name, caps.token_scope) == ("", "read")
        wrong = bearer("wrong-secret")
        assert code_of(get, get_request(manifest.key.raw, "main"), metadata=wrong) == (
            grpc.StatusCode.UNAUTHENTICATED
        )


def test_file_changes_are_picked_up_and_a_broken_file_keeps_the_old_tokens(
    tmp_path: Path,
) -> None:
    """SEC-002: a token added to the file works without a restart; a file that fails
    validation is rejected and the tokens in force stay."""
    path = write_tokens(tmp_path / "tokens.yaml", tokens_yaml())
    authority = TokenAuthority.open(path)
    added = f"""\
  - name: runner
    sha256: "{hash_secret("fresh-secret")}"
    namespaces: [main]
"""
    with running_server(authenticator=authority) as server:
        get = server.manifests().GetManifest
        request = get_request(b"k" * 32, "main")

        def status(token: str) -> grpc.StatusCode:
            return code_of(get, request, metadata=bearer(token))

        assert status("fresh-secret") == grpc.StatusCode.UNAUTHENTICATED
        write_tokens(path, tokens_yaml(extra=added))
        _eventually(lambda: status("fresh-secret") == OK, "the added token to work")

        write_tokens(path, tokens_yaml(extra=added) + "  - name: [broken\n")
        _eventually(lambda: not authority.changed(), "the watcher to try the broken file")
        assert status("fresh-secret") == OK
        assert status("ci-main") == OK
        assert authority.reload() is False


def test_reload_swaps_tokens_and_removed_tokens_stop_working(tmp_path: Path) -> None:
    """SEC-002: an explicit reload (what SIGHUP calls) removes a token from service."""
    path = write_tokens(tmp_path / "tokens.yaml", tokens_yaml())
    authority = TokenAuthority.open(path)
    method = "/haz.remote.v1.ManifestStore/GetManifest"
    assert authority.authenticate(method=method, metadata=dict(bearer("laptop"))).name == "laptop"
    write_tokens(path, "anonymous: none\ntokens: []\n")
    assert authority.reload() is True
    assert authority.tokens.tokens == ()
    with pytest.raises(PermissionError, match="unknown token"):
        authority.authenticate(method=method, metadata=dict(bearer("laptop")))
