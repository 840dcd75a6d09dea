"""S3 failures are bounded StorageErrors, never hangs (RC-003 server side, SVC-001).

A real SeaweedFS behind the fault proxy; botocore runs with short timeouts and one attempt,
as a test-sized version of the production settings. Each test has a hard pytest timeout: a
hang fails it instead of stalling the suite.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cache_service.storage.base import BlobRef, StorageError
from cache_service.storage.s3 import (
    S3BlobStore,
    S3ManifestStore,
    check_bucket,
    make_s3_client,
)
from cache_service.storage.verifying import VerifyingBlobStore
from hazremote.domain.model import HashName
from tests.cache_service.storage.conftest import BUCKET, S3Env, make_blob, s3_settings
from tests.support.faultproxy import BlackHole, Direction, FaultProxy, ResetAfter
from tests.support.seaweedfs import SeaweedS3


@pytest.fixture
def proxy(seaweed: SeaweedS3) -> Iterator[FaultProxy]:
    with FaultProxy(target_host="127.0.0.1", target_port=seaweed.s3_port) as running:
        yield running


def _stores(proxy: FaultProxy, s3_env: S3Env) -> tuple[S3BlobStore, S3ManifestStore]:
    client = make_s3_client(
        s3_settings(proxy.url, connect_timeout_s=0.3, read_timeout_s=0.3, max_attempts=1)
    )
    return (
        S3BlobStore(client=client, location=s3_env.location),
        S3ManifestStore(client=client, location=s3_env.location),
    )


@pytest.mark.timeout(30)
def test_black_holed_s3_raises_storage_error_instead_of_hanging(
    proxy: FaultProxy, s3_env: S3Env
) -> None:
    """RC-003: an endpoint that accepts but never answers becomes a StorageError (timeout)."""
    blobs, manifests = _stores(proxy, s3_env)
    blob = make_blob()
    proxy.fault = BlackHole()
    with pytest.raises(StorageError, match="S3 HEAD"):
        blobs.missing([blob.ref])
    with pytest.raises(StorageError, match="S3 PUT"):
        blobs.write(blob.ref, [blob.stored])
    with pytest.raises(StorageError, match="S3 GET"):
        manifests.get("main", HashName.BLAKE3, blob.ref.digest)


def _read_whole(store: VerifyingBlobStore, ref: BlobRef) -> bytes:
    reader = store.open_read(ref)
    assert reader is not None
    with reader:
        return reader.read()


@pytest.mark.timeout(30)
def test_connection_reset_mid_download_raises_storage_error(
    proxy: FaultProxy, s3_env: S3Env
) -> None:
    """RC-003: a connection reset while a blob streams out is a StorageError from read()."""
    blobs, _ = _stores(proxy, s3_env)
    blob = make_blob(bytes(range(256)) * 4000)  # ~1 MB uncompressed, incompressible-ish
    store = VerifyingBlobStore(inner=blobs)
    store.write(blob.ref, [blob.stored])
    proxy.fault = ResetAfter(n=600, direction=Direction.DOWNSTREAM)  # inside the body
    with pytest.raises(StorageError, match=r"S3 GET s3://.* failed"):
        _read_whole(store, blob.ref)


@pytest.mark.timeout(30)
def test_unreachable_endpoint_is_a_clear_storage_error(proxy: FaultProxy) -> None:
    """SVC-001: checking the bucket through a dead endpoint fails fast with a clear message."""
    client = make_s3_client(
        s3_settings(proxy.url, connect_timeout_s=0.3, read_timeout_s=0.3, max_attempts=1)
    )
    proxy.fault = BlackHole()
    with pytest.raises(StorageError, match=f"cannot reach S3 for bucket '{BUCKET}'"):
        check_bucket(client, BUCKET)


def test_missing_bucket_is_a_clear_storage_error(seaweed: SeaweedS3) -> None:
    """SVC-001: a bucket that does not exist is named in the error when storage opens."""
    client = make_s3_client(s3_settings(seaweed.endpoint_url))
    with pytest.raises(StorageError, match="S3 bucket 'no-such-bucket-here' does not exist"):
        check_bucket(client, "no-such-bucket-here")
