"""Link records in manifests put to the service (issue 12): checked as the client checks them.

Spec coverage: CACHE-011 (the optional ``symlink`` field of an output record is accepted and
kept as sent; a hostile one is ``INVALID_ARGUMENT`` naming it, the strict parser being the
client's own), RC-005 (a link needs no blob beyond its target's), SEC-004 (a link and a copy
of the same bytes are different content: a conflicting put).
"""

from __future__ import annotations

import dataclasses
import os
from typing import cast

import grpc
import pytest

from hazremote.cache.manifest import Manifest, parse_manifest
from hazremote.wire.haz.remote.v1 import cache_pb2
from tests.cache_service.server.serverkit import (
    BLAKE3,
    HASH,
    ServerThread,
    make_manifest,
    put_request,
    upload,
)


def linked_manifest(server: ServerThread, label: str, *, text: str = "libx.so.1.7") -> Manifest:
    """``/app/dist/libx.so`` (a link with ``text``) and the file it names; only the file's
    bytes and the streams are uploaded."""
    library = os.urandom(64)
    upload(server, b"out\n", b"", library)
    plain = make_manifest(key_label=label, outputs={"/app/dist/libx.so.1.7": library})
    target = plain.outputs[0]
    link = dataclasses.replace(target, path="/app/dist/libx.so", symlink=text)
    return dataclasses.replace(plain, outputs=(link, target))


def _get(server: ServerThread, manifest: Manifest) -> bytes:
    reply = server.manifests().GetManifest(
        cache_pb2.GetManifestRequest(namespace="main", hash_function=BLAKE3, key=manifest.key.raw)
    )
    assert reply.found
    return cast(bytes, reply.manifest_json)


def test_a_link_record_is_accepted_without_a_blob_of_its_own(server: ServerThread) -> None:
    """CACHE-011/RC-005: stored and served with its symlink text."""
    manifest = linked_manifest(server, "symlink-accepted")
    assert server.manifests().PutManifest(put_request(manifest)).created is True
    stored = parse_manifest(
        _get(server, manifest), chapter_revision=manifest.chapter_revision, hash_name=HASH
    )
    assert [o.symlink for o in stored.outputs] == ["libx.so.1.7", None]


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ("/etc/passwd", "is absolute"),
        ("../../../etc/passwd", "leaves the workspace"),
        ("../../src/main.c", "not an output of this manifest"),
        ("libx.so", "loop"),
    ],
)
def test_a_hostile_link_record_is_invalid_argument(
    server: ServerThread, text: str, detail: str
) -> None:
    """CACHE-011/SEC-001: the service refuses what every client would refuse to restore."""
    manifest = linked_manifest(server, f"symlink-hostile-{text}", text=text)
    with pytest.raises(grpc.RpcError) as caught:
        server.manifests().PutManifest(put_request(manifest))
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "outputs[0].symlink" in (caught.value.details() or "")
    assert detail in (caught.value.details() or "")


def test_a_link_and_a_copy_of_the_same_bytes_conflict(server: ServerThread) -> None:
    """SEC-004: the symlink field is part of an entry's content."""
    manifest = linked_manifest(server, "symlink-conflict")
    assert server.manifests().PutManifest(put_request(manifest)).created is True
    copy = dataclasses.replace(manifest.outputs[0], symlink=None)
    as_copy = dataclasses.replace(manifest, outputs=(copy, manifest.outputs[1]))
    with pytest.raises(grpc.RpcError) as caught:
        server.manifests().PutManifest(put_request(as_copy))
    assert caught.value.code() is grpc.StatusCode.ALREADY_EXISTS
