"""Helpers of the auth tests: the secrets and tokens file of a small CI setup, authenticated
calls, and a manifest whose blobs are uploaded first (RC-005)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

import grpc

from cache_service.auth import hash_secret
from hazremote.cache.manifest import Manifest
from hazremote.wire.haz.remote.v1 import cache_pb2
from tests.cache_service.server.serverkit import (
    BLAKE3,
    ServerThread,
    digest_of,
    make_manifest,
)

#: Secrets of the tokens below (the file stores only their SHA-256).
SECRETS = {
    "ci-main": "s3cret-main-0123456789",
    "ci-pr": "s3cret-pr-0123456789",
    "laptop": "s3cret-laptop-0123456789",
    "old": "s3cret-old-0123456789",
    "worker-a": "s3cret-worker-0123456789",
    "runner": "s3cret-runner-0123456789",
}


def tokens_yaml(*, anonymous: str = "none", extra: str = "") -> str:
    """The tokens file of SPEC §5's CI setup, plus an expired and a worker token."""
    h = {name: hash_secret(secret) for name, secret in SECRETS.items()}
    return f"""\
anonymous: {anonymous}
tokens:
  - name: ci-main
    sha256: "{h["ci-main"]}"
    namespaces: [main]
    scope: read-write
    execute: true
  - name: ci-pr
    sha256: "{h["ci-pr"]}"
    namespaces: ["pr-*"]
    scope: read-write
    read_through: [main]
  - name: laptop
    sha256: "{h["laptop"]}"
    namespaces: [main]
    scope: read
  - name: old
    sha256: "{h["old"]}"
    namespaces: [main]
    scope: read-write
    expires: 2020-01-01T00:00:00Z
  - name: worker-a
    sha256: "{h["worker-a"]}"
    role: worker
    namespaces: ["*"]
{extra}"""


def write_tokens(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def bearer(name_or_secret: str) -> tuple[tuple[str, str], ...]:
    """Call metadata carrying the secret of token ``name`` (or the literal value)."""
    secret = SECRETS.get(name_or_secret, name_or_secret)
    return (("authorization", f"Bearer {secret}"),)


def code_of(call: Callable[..., object], request: object, **kwargs: object) -> grpc.StatusCode:
    """The status code of a unary call (OK when it succeeds)."""
    try:
        call(request, timeout=20, **kwargs)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def upload_as(server: ServerThread, token: str, blobs: Iterable[bytes]) -> None:
    reply = server.content().BatchUpdateBlobs(
        cache_pb2.BatchUpdateBlobsRequest(
            hash_function=BLAKE3,
            items=[
                cache_pb2.BatchUpdateBlobsRequest.Item(digest=digest_of(b), data=b) for b in blobs
            ],
        ),
        metadata=bearer(token),
        timeout=20,
    )
    assert all(item.status_code == 0 for item in reply.items)


def stored_manifest(server: ServerThread, label: str, *, token: str = "ci-main") -> Manifest:
    """A manifest whose blobs ``token`` has uploaded (so a put can succeed)."""
    out, artefact = os.urandom(16), os.urandom(32)
    upload_as(server, token, [out, b"", artefact])
    return make_manifest(key_label=label, stdout=out, outputs={"/app/dist/a": artefact})


def get_request(key: bytes, namespace: str) -> cache_pb2.GetManifestRequest:
    return cache_pb2.GetManifestRequest(namespace=namespace, hash_function=BLAKE3, key=key)
