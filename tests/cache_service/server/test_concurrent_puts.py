"""Concurrent conflicting manifest puts through the real service (SEC-004, no race).

Sixteen clients put sixteen *different* manifests for one key at once, over the file store
and over S3 (real SeaweedFS, conditional `IfNoneMatch` puts): exactly one is created, every
other put is `ALREADY_EXISTS`, and the stored document is the winner's, intact.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import cast

import grpc
import pytest

from hazremote.cache.manifest import parse_manifest
from hazremote.wire.haz.remote.v1 import cache_pb2
from tests.cache_service.server.serverkit import (
    BLAKE3,
    HASH,
    make_manifest,
    put_request,
    running_server,
    server_config,
    upload,
)
from tests.support.fixtures import BUCKET, s3_client_env, seaweed  # noqa: F401 - fixture
from tests.support.seaweedfs import SeaweedS3

CONTENDERS = 16


def contest(config_storage: str, **extra: object) -> None:
    config = server_config(storage=config_storage, **extra)
    with running_server(config, config_storage=True) as server:
        outs = [os.urandom(24) for _ in range(CONTENDERS)]
        upload(server, b"", *outs)  # every stdout, and the empty stderr
        manifests = [make_manifest(key_label="contested", stdout=out) for out in outs]

        def put(index: int) -> str:
            try:
                reply = server.manifests().PutManifest(put_request(manifests[index]), timeout=30)
            except grpc.RpcError as error:
                return cast(str, error.code().name)
            return "CREATED" if reply.created else "IDENTICAL"

        with ThreadPoolExecutor(CONTENDERS) as pool:
            outcomes = list(pool.map(put, range(CONTENDERS)))
        assert outcomes.count("CREATED") == 1, outcomes
        assert outcomes.count("ALREADY_EXISTS") == CONTENDERS - 1, outcomes
        winner = manifests[outcomes.index("CREATED")]
        got = server.manifests().GetManifest(
            cache_pb2.GetManifestRequest(namespace="main", hash_function=BLAKE3, key=winner.key.raw)
        )
        stored = parse_manifest(got.manifest_json, chapter_revision=0, hash_name=HASH)
        assert stored.stdout == winner.stdout


def test_concurrent_conflicting_puts_on_the_file_store(tmp_path: Path) -> None:
    contest(str(tmp_path / "store"))


def test_concurrent_conflicting_puts_on_s3(
    seaweed: SeaweedS3,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in s3_client_env().items():
        monkeypatch.setenv(name, value)
    contest(
        f"s3://{BUCKET}/concurrent-{os.getpid()}",
        s3_endpoint=seaweed.endpoint_url,
        s3_region="us-east-1",
    )
