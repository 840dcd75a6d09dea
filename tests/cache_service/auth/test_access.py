"""Token statuses, scopes and namespaces over real gRPC (SEC-002, SEC-003, SEC-006, §5)."""

from __future__ import annotations

import json
import os

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cache_service.housekeeping import list_producers
from hazremote.wire.haz.remote.v1 import cache_pb2
from tests.cache_service.auth.authkit import (
    bearer,
    code_of,
    get_request,
    stored_manifest,
    upload_as,
)
from tests.cache_service.server.serverkit import (
    BLAKE3,
    HASH,
    ServerThread,
    digest_of,
    make_manifest,
    put_request,
    write_chunks,
)

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
DENIED = grpc.StatusCode.PERMISSION_DENIED
OK = grpc.StatusCode.OK


def _missing(server: ServerThread, data: bytes) -> bool:
    reply = server.content().FindMissingBlobs(
        cache_pb2.FindMissingBlobsRequest(hash_function=BLAKE3, digests=[digest_of(data)]),
        metadata=bearer("ci-main"),
    )
    return len(reply.missing) == 1


def test_no_token_unknown_token_expired_token_and_bad_header_are_unauthenticated(
    guarded: ServerThread,
) -> None:
    """§5 statuses: no token with ``anonymous: none``, an unknown or expired token, or a
    header that is not ``Bearer`` → UNAUTHENTICATED."""
    request = get_request(b"k" * 32, "main")
    call = guarded.manifests().GetManifest
    assert code_of(call, request) == UNAUTHENTICATED
    assert code_of(call, request, metadata=bearer("not-a-known-secret")) == UNAUTHENTICATED
    assert code_of(call, request, metadata=bearer("old")) == UNAUTHENTICATED
    basic = (("authorization", "Basic czNjcmV0LW1haW4="),)
    assert code_of(call, request, metadata=basic) == UNAUTHENTICATED
    assert code_of(call, request, metadata=bearer("ci-main")) == OK


def test_health_checking_needs_no_token(guarded: ServerThread) -> None:
    """§5: health checking needs no token even with ``anonymous: none``."""
    reply = health_pb2_grpc.HealthStub(guarded.channel).Check(health_pb2.HealthCheckRequest())
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_capabilities_report_the_token_as_the_server_sees_it(guarded: ServerThread) -> None:
    """SEC-002: GetCapabilities needs no token; with one it names the token, its scope in the
    requested namespace, its namespaces and read-through chain."""
    stub = guarded.capabilities()
    anonymous = stub.GetCapabilities(cache_pb2.GetCapabilitiesRequest(namespace="main"))
    assert anonymous.auth_disabled is False
    assert (anonymous.token_name, anonymous.token_scope) == ("", "")
    scopes = {}
    for namespace in ("pr-7", "main", "team-b"):
        reply = stub.GetCapabilities(
            cache_pb2.GetCapabilitiesRequest(namespace=namespace), metadata=bearer("ci-pr")
        )
        assert reply.token_name == "ci-pr"
        assert list(reply.token_namespaces) == ["pr-*"]
        assert list(reply.token_read_through) == ["main"]
        scopes[namespace] = reply.token_scope
    assert scopes == {"pr-7": "read-write", "main": "read", "team-b": ""}
    request = cache_pb2.GetCapabilitiesRequest(namespace="main")
    assert code_of(stub.GetCapabilities, request, metadata=bearer("nope")) == UNAUTHENTICATED


def test_read_token_cannot_write_manifests_or_blobs_and_nothing_is_written(
    guarded: ServerThread,
) -> None:
    """§5: writing with ``read`` scope (PutManifest, BatchUpdateBlobs, WriteBlob) →
    PERMISSION_DENIED, and nothing reaches storage."""
    manifest = stored_manifest(guarded, "laptop-put")
    put = guarded.manifests().PutManifest
    assert code_of(put, put_request(manifest), metadata=bearer("laptop")) == DENIED
    reply = guarded.manifests().GetManifest(
        get_request(manifest.key.raw, "main"), metadata=bearer("ci-main")
    )
    assert reply.found is False

    data = os.urandom(40)
    batch = cache_pb2.BatchUpdateBlobsRequest(
        hash_function=BLAKE3,
        items=[cache_pb2.BatchUpdateBlobsRequest.Item(digest=digest_of(data), data=data)],
    )
    assert code_of(guarded.content().BatchUpdateBlobs, batch, metadata=bearer("laptop")) == DENIED
    stream = guarded.content().WriteBlob
    assert code_of(stream, iter(write_chunks(data)), metadata=bearer("laptop")) == DENIED
    assert _missing(guarded, data)
    # The same read token may read: blobs and manifests of its namespace.
    read = cache_pb2.BatchReadBlobsRequest(hash_function=BLAKE3, digests=[digest_of(data)])
    assert code_of(guarded.content().BatchReadBlobs, read, metadata=bearer("laptop")) == OK


def test_token_outside_its_namespaces_is_denied(guarded: ServerThread) -> None:
    """§5/SEC-003: a known token outside its namespaces → PERMISSION_DENIED, for reads and
    writes; a pull-request token can never write ``main``."""
    get = guarded.manifests().GetManifest
    assert code_of(get, get_request(b"k" * 32, "team-b"), metadata=bearer("ci-main")) == DENIED
    assert code_of(get, get_request(b"k" * 32, "pr-1"), metadata=bearer("ci-main")) == DENIED
    manifest = stored_manifest(guarded, "pr-writes-main", token="ci-pr")
    put = guarded.manifests().PutManifest
    assert code_of(put, put_request(manifest), metadata=bearer("ci-pr")) == DENIED
    request = put_request(manifest, namespace="team-b")
    assert code_of(put, request, metadata=bearer("ci-main")) == DENIED


def test_pull_request_token_reads_through_to_main_and_writes_only_its_own_namespace(
    guarded: ServerThread,
) -> None:
    """SEC-003 (CREEP defence): a PR token reads ``pr-123`` then ``main``, writes ``pr-123``;
    its entry never becomes visible to the ``main`` token."""
    manifests = guarded.manifests()
    trusted = stored_manifest(guarded, "shared-task")
    assert manifests.PutManifest(put_request(trusted), metadata=bearer("ci-main")).created

    through = manifests.GetManifest(
        get_request(trusted.key.raw, "pr-123"), metadata=bearer("ci-pr")
    )
    assert (through.found, through.found_in_namespace) == (True, "main")

    pr_only = stored_manifest(guarded, "pr-only-task", token="ci-pr")
    request = put_request(pr_only, namespace="pr-123")
    assert manifests.PutManifest(request, metadata=bearer("ci-pr")).created
    own = manifests.GetManifest(get_request(pr_only.key.raw, "pr-123"), metadata=bearer("ci-pr"))
    assert (own.found, own.found_in_namespace) == (True, "pr-123")
    from_main = manifests.GetManifest(
        get_request(pr_only.key.raw, "main"), metadata=bearer("ci-main")
    )
    assert from_main.found is False

    # The PR's own entry for a key shadows main's; the batch reports each key's namespace.
    shadow = stored_manifest(guarded, "shared-task", token="ci-pr")
    request = put_request(shadow, namespace="pr-123")
    assert manifests.PutManifest(request, metadata=bearer("ci-pr")).created
    batch = manifests.BatchGetManifests(
        cache_pb2.BatchGetManifestsRequest(
            namespace="pr-124",
            hash_function=BLAKE3,
            keys=[trusted.key.raw, pr_only.key.raw],
        ),
        metadata=bearer("ci-pr"),
    )
    assert [(r.found, r.found_in_namespace) for r in batch.results] == [
        (True, "main"),
        (False, ""),
    ]
    mine = manifests.GetManifest(get_request(trusted.key.raw, "pr-123"), metadata=bearer("ci-pr"))
    assert mine.found_in_namespace == "pr-123"
    assert json.loads(mine.manifest_json)["stdout"] != json.loads(through.manifest_json)["stdout"]
    main_view = manifests.GetManifest(
        get_request(trusted.key.raw, "main"), metadata=bearer("ci-main")
    )
    assert main_view.manifest_json == through.manifest_json


def test_producer_is_the_token_name(guarded: ServerThread) -> None:
    """SEC-006: the stored producer is the authenticated token's name, never the client's."""
    manifest = make_manifest(key_label="producer-check", producer="forged-by-client")
    upload_as(guarded, "ci-main", [b"out\n", b""])
    guarded.manifests().PutManifest(put_request(manifest), metadata=bearer("ci-main"))
    stored = guarded.manifest_store.get("main", HASH, manifest.key)
    assert stored is not None
    assert json.loads(stored)["producer"] == "ci-main"
    producers = {p.producer for p in list_producers(guarded.manifest_store)}
    assert "ci-main" in producers
    assert "forged-by-client" not in producers


def test_worker_token_may_upload_blobs_but_not_publish_manifests_without_write_scope(
    guarded: ServerThread,
) -> None:
    """§5: ``role: worker`` may upload blobs (action outputs); without ``read-write`` scope it
    publishes a manifest only under a key it holds a lease on (this one it does not)."""
    upload_as(guarded, "worker-a", [os.urandom(24)])
    manifest = stored_manifest(guarded, "worker-put", token="worker-a")
    put = guarded.manifests().PutManifest
    assert code_of(put, put_request(manifest), metadata=bearer("worker-a")) == DENIED
