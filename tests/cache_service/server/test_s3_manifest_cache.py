"""A server over S3 with ``--read-cache`` serves manifests from memory (issue 5): an
``admin purge`` run as its own process is not seen until the TTL has passed, and a TTL of 0
turns the cache off. The in-process server opens its storage through the real factory."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

from hazremote.wire.haz.remote.v1 import cache_pb2
from tests.cache_service.server.serverkit import (
    BLAKE3,
    make_manifest,
    put_request,
    running_server,
    server_config,
    upload,
)
from tests.support.fixtures import BUCKET, SERVICE, s3_client_env, seaweed
from tests.support.seaweedfs import REGION, SeaweedS3

__all__ = ["seaweed"]


@pytest.mark.parametrize(("ttl", "served_after_purge"), [(600.0, True), (0.0, False)])
def test_a_purge_by_another_process_is_seen_once_the_ttl_allows(
    seaweed: SeaweedS3,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    ttl: float,
    served_after_purge: bool,
) -> None:
    """Within the TTL the purged manifest is still a hit (the bounded staleness the docs
    state); with a TTL of 0 every lookup asks S3 and sees the purge at once."""
    for name, value in s3_client_env().items():
        monkeypatch.setenv(name, value)
    storage = f"s3://{BUCKET}/cached-{uuid.uuid4().hex[:10]}"
    s3_flags = ["--storage", storage, "--s3-endpoint", seaweed.endpoint_url, "--s3-region", REGION]
    config = server_config(
        storage=storage,
        s3_endpoint=seaweed.endpoint_url,
        s3_region=REGION,
        read_cache_dir=tmp_path / "cache",
        read_cache_size=64 << 20,
        read_cache_manifest_ttl=ttl,
    )
    manifest = make_manifest(key_label="purged", stdout=b"out\n")
    lookup = cache_pb2.GetManifestRequest(
        namespace="main", hash_function=BLAKE3, key=manifest.key.raw
    )
    with running_server(config, config_storage=True) as server:
        upload(server, b"out\n", b"")
        server.manifests().PutManifest(put_request(manifest))
        assert server.manifests().GetManifest(lookup).found

        purge = subprocess.run(
            [SERVICE, "admin", "purge", "--producer", "anonymous", *s3_flags],
            env={**os.environ, **s3_client_env()},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert purge.returncode == 0, purge.stderr
        assert "deleted 1 manifest(s)" in purge.stdout

        assert server.manifests().GetManifest(lookup).found is served_after_purge
