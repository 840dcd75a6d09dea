"""ManifestStore over real gRPC: lookups, strict parsing, completeness, immutability and the
producer (CACHE-011, RC-005, SEC-003 namespaces, SEC-004, SEC-006)."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping
from typing import Any, cast

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cache_service.identity import Identity
from cache_service.storage.base import BlobRef
from hazremote.cache.manifest import Manifest, parse_manifest
from hazremote.wire.haz.remote.v1 import cache_pb2, digest_pb2
from tests.cache_service.server.serverkit import (
    BLAKE3,
    HASH,
    TEST_LIMITS,
    ServerThread,
    digest_of,
    make_manifest,
    put_request,
    running_server,
    server_config,
    upload,
)


def _get(
    server: ServerThread, key: bytes, namespace: str = "main"
) -> cache_pb2.GetManifestResponse:
    return cast(
        cache_pb2.GetManifestResponse,
        server.manifests().GetManifest(
            cache_pb2.GetManifestRequest(namespace=namespace, hash_function=BLAKE3, key=key)
        ),
    )


def _error(call: Callable[[Any], object], request: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(request)
    return caught.value


def _stored_manifest(server: ServerThread, label: str) -> Manifest:
    out, err = os.urandom(16), os.urandom(8)
    artefact = os.urandom(32)
    upload(server, out, err, artefact)
    return make_manifest(key_label=label, stdout=out, stderr=err, outputs={"/app/dist/a": artefact})


def test_put_then_get_round_trips_and_records_the_producer(server: ServerThread) -> None:
    """SEC-006: the stored producer is the authenticated identity, not the client's value."""
    manifest = _stored_manifest(server, "round-trip")
    assert server.manifests().PutManifest(put_request(manifest)).created is True
    reply = _get(server, manifest.key.raw)
    assert reply.found is True
    assert reply.found_in_namespace == "main"
    stored = parse_manifest(reply.manifest_json, chapter_revision=0, hash_name=HASH)
    assert stored.producer == "anonymous"
    assert dataclasses.replace(stored, producer="client-says") == manifest


def test_get_of_absent_key_is_found_false_not_an_error(server: ServerThread) -> None:
    reply = _get(server, os.urandom(32))
    assert reply.found is False
    assert reply.manifest_json == b""


def test_namespaces_are_isolated(server: ServerThread) -> None:
    """SEC-003: a manifest put in one namespace is not found in another."""
    manifest = _stored_manifest(server, "isolated")
    server.manifests().PutManifest(put_request(manifest, namespace="pr-1"))
    assert _get(server, manifest.key.raw, "pr-1").found is True
    assert _get(server, manifest.key.raw, "main").found is False


@pytest.mark.parametrize("namespace", ["", "-lead", "has space", "x" * 65, "a/b"])
def test_invalid_namespace_is_invalid_argument(server: ServerThread, namespace: str) -> None:
    """Namespaces are ID-like names ([A-Za-z0-9_-], 1-64)."""
    error = _error(
        server.manifests().GetManifest,
        cache_pb2.GetManifestRequest(namespace=namespace, hash_function=BLAKE3, key=os.urandom(32)),
    )
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "namespace" in (error.details() or "")


def test_batch_get_answers_each_key_in_order(server: ServerThread) -> None:
    manifest = _stored_manifest(server, "batch")
    server.manifests().PutManifest(put_request(manifest))
    reply = server.manifests().BatchGetManifests(
        cache_pb2.BatchGetManifestsRequest(
            namespace="main", hash_function=BLAKE3, keys=[os.urandom(32), manifest.key.raw]
        )
    )
    assert [r.found for r in reply.results] == [False, True]
    too_many = cache_pb2.BatchGetManifestsRequest(
        namespace="main",
        hash_function=BLAKE3,
        keys=[os.urandom(32)] * (TEST_LIMITS.max_batch_items + 1),
    )
    assert (
        _error(server.manifests().BatchGetManifests, too_many).code()
        is grpc.StatusCode.RESOURCE_EXHAUSTED
    )


def test_malformed_key_is_invalid_argument(server: ServerThread) -> None:
    error = _error(
        server.manifests().GetManifest,
        cache_pb2.GetManifestRequest(namespace="main", hash_function=BLAKE3, key=b"short"),
    )
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT


def test_put_referencing_missing_blob_is_failed_precondition(server: ServerThread) -> None:
    """RC-005: every referenced blob must be present; the status names the first missing."""
    absent = os.urandom(40)
    manifest = make_manifest(key_label="incomplete", stdout=b"", outputs={"/app/dist/x": absent})
    upload(server, b"")
    error = _error(server.manifests().PutManifest, put_request(manifest))
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert manifest.outputs[0].hash.hex in (error.details() or "")
    assert _get(server, manifest.key.raw).found is False


def test_malformed_json_is_invalid_argument(server: ServerThread) -> None:
    manifest = make_manifest(key_label="bad-json")
    error = _error(server.manifests().PutManifest, put_request(manifest, document=b"{not json"))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "invalid JSON" in (error.details() or "")


def test_unknown_field_is_invalid_argument_naming_it(server: ServerThread) -> None:
    """CACHE-011 strictness: an unknown field is named in the status message."""
    manifest = _stored_manifest(server, "unknown-field")
    document = manifest.to_json_object()
    cast("dict[str, object]", document["stdout"])["surprise"] = 1  # a JSON object
    error = _error(
        server.manifests().PutManifest,
        put_request(manifest, document=json.dumps(document).encode()),
    )
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "surprise" in (error.details() or "")
    assert "stdout" in (error.details() or "")


def test_key_mismatch_between_request_and_document_is_invalid_argument(
    server: ServerThread,
) -> None:
    manifest = _stored_manifest(server, "key-mismatch")
    request = put_request(manifest)
    request.key = os.urandom(32)
    error = _error(server.manifests().PutManifest, request)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "does not match" in (error.details() or "")


def test_identical_reput_is_not_created_even_with_other_timestamps(server: ServerThread) -> None:
    """SEC-004: same outputs, streams and exit code → created=false, OK."""
    manifest = _stored_manifest(server, "identical")
    assert server.manifests().PutManifest(put_request(manifest)).created is True
    again = dataclasses.replace(
        manifest, created_at_unix=1_800_000_000, duration_ms=99, producer="x"
    )
    assert server.manifests().PutManifest(put_request(again)).created is False
    stored = parse_manifest(
        _get(server, manifest.key.raw).manifest_json, chapter_revision=0, hash_name=HASH
    )
    assert stored.created_at_unix == manifest.created_at_unix


def test_conflicting_put_is_already_exists_and_original_stays(server: ServerThread) -> None:
    """SEC-004: a different manifest for an existing key → ALREADY_EXISTS; original intact."""
    manifest = _stored_manifest(server, "conflict")
    server.manifests().PutManifest(put_request(manifest))
    original = _get(server, manifest.key.raw).manifest_json
    other_out = os.urandom(16)
    upload(server, other_out)
    different = dataclasses.replace(
        manifest,
        stdout=dataclasses.replace(
            manifest.stdout, hash=make_manifest(key_label="x", stdout=other_out).stdout.hash
        ),
    )
    error = _error(server.manifests().PutManifest, put_request(different))
    assert error.code() is grpc.StatusCode.ALREADY_EXISTS
    assert _get(server, manifest.key.raw).manifest_json == original


def test_manifest_whose_blobs_are_gone_may_be_replaced(server: ServerThread) -> None:
    """SEC-004 exception: an existing manifest whose blobs were purged is replaced."""
    manifest = _stored_manifest(server, "replaceable")
    server.manifests().PutManifest(put_request(manifest))
    server.blob_leaf.delete(
        BlobRef(hash_name=HASH, digest=manifest.outputs[0].hash, size=manifest.outputs[0].size)
    )
    replacement = _stored_manifest(server, "replaceable")
    assert server.manifests().PutManifest(put_request(replacement)).created is True
    stored = parse_manifest(
        _get(server, manifest.key.raw).manifest_json, chapter_revision=0, hash_name=HASH
    )
    assert stored.outputs[0].hash == replacement.outputs[0].hash


class _BearerNames:
    """A stand-in for the tokens issue's authenticator: the bearer value is the identity."""

    def authenticate(self, *, method: str, metadata: Mapping[str, str]) -> Identity:
        value = metadata.get("authorization", "")
        if not value.startswith("Bearer "):
            raise PermissionError("no token")
        return Identity(name=value.removeprefix("Bearer "))


def test_producer_comes_from_the_authenticator_seam_and_refusal_is_unauthenticated() -> None:
    """SEC-006 via the SEC-002 seam: the producer is the authenticated name; health needs none."""
    with running_server(server_config(), authenticator=_BearerNames()) as server:
        out = os.urandom(8)
        manifest = make_manifest(key_label="seam", stdout=out)
        error = _error(server.manifests().PutManifest, put_request(manifest))
        assert error.code() is grpc.StatusCode.UNAUTHENTICATED
        auth = (("authorization", "Bearer ci-main"),)
        server.content().BatchUpdateBlobs(
            cache_pb2.BatchUpdateBlobsRequest(
                hash_function=BLAKE3,
                items=[
                    cache_pb2.BatchUpdateBlobsRequest.Item(digest=digest_of(b), data=b)
                    for b in (out, b"")
                ],
            ),
            metadata=auth,
        )
        assert server.manifests().PutManifest(put_request(manifest), metadata=auth).created
        reply = server.manifests().GetManifest(
            cache_pb2.GetManifestRequest(
                namespace="main", hash_function=BLAKE3, key=manifest.key.raw
            ),
            metadata=auth,
        )
        stored = parse_manifest(reply.manifest_json, chapter_revision=0, hash_name=HASH)
        assert stored.producer == "ci-main"
        health = health_pb2_grpc.HealthStub(server.channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING


def test_manifest_of_another_hash_function_than_the_request_is_invalid_argument(
    server: ServerThread,
) -> None:
    """CACHE-002: a blake3 document put under a sha256 request is rejected, naming both."""
    manifest = _stored_manifest(server, "hash-mismatch")
    request = put_request(manifest)
    request.hash_function = digest_pb2.HASH_FUNCTION_SHA256
    error = _error(server.manifests().PutManifest, request)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "hash_function" in (error.details() or "")


def test_manifest_of_another_chapter_revision_is_stored_as_is(server: ServerThread) -> None:
    """The service never interprets tasks: a valid manifest of a later revision is accepted."""
    manifest = dataclasses.replace(_stored_manifest(server, "revision"), chapter_revision=7)
    assert server.manifests().PutManifest(put_request(manifest)).created is True
    stored = parse_manifest(
        _get(server, manifest.key.raw).manifest_json, chapter_revision=7, hash_name=HASH
    )
    assert stored.chapter_revision == 7


def _with_predecessor(document: bytes, predecessor: list[str], revision: int) -> bytes:
    doc = json.loads(document)
    doc["chapter_revision"] = revision
    doc["key_components"]["predecessors"] = [predecessor]
    return json.dumps(doc).encode()


def test_predecessors_are_validated_against_the_revision_the_document_declares(
    server: ServerThread,
) -> None:
    """CACHE-011 (CACHE-007 revision 1): a revision-1 document's predecessors carry an outputs
    hash (three items are rejected, naming the field); a revision-0 document's three-item
    predecessors are still accepted and served as they were put (its older clients keep their
    entries, newer clients see a schema mismatch)."""
    out, err = digest_of(b"o").hash.hex(), digest_of(b"e").hash.hex()
    old = _stored_manifest(server, "revision-0 predecessor")
    three = ["lib:build", out, err]
    document = _with_predecessor(old.to_json(), three, revision=0)
    assert server.manifests().PutManifest(put_request(old, document=document)).created is True
    served = _get(server, old.key.raw).manifest_json
    assert json.loads(served)["key_components"]["predecessors"] == [three]
    (pred,) = parse_manifest(served, chapter_revision=0, hash_name=HASH).key_components.predecessors
    assert pred.outputs is None

    new = _stored_manifest(server, "revision-1 predecessor")
    bad = _with_predecessor(new.to_json(), three, revision=1)
    error = _error(server.manifests().PutManifest, put_request(new, document=bad))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "key_components.predecessors[0]" in (error.details() or "")
    good = _with_predecessor(new.to_json(), [*three, digest_of(b"x").hash.hex()], revision=1)
    assert server.manifests().PutManifest(put_request(new, document=good)).created is True
