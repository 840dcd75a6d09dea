"""open_storage: configuration → composed stores, the one place that knows backends (SVC-001)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from cache_service.storage import StorageConfig, StorageError, open_storage
from cache_service.storage.base import BlobVerificationError
from hazremote.domain.model import HashName
from tests.cache_service.storage.conftest import BUCKET, disk_names, make_blob
from tests.support.seaweedfs import ACCESS_KEY, REGION, SECRET_KEY, SeaweedS3


@pytest.mark.parametrize("form", ["file_url", "plain_path"])
def test_file_urls_and_plain_paths_open_disk_storage(tmp_path: Path, form: str) -> None:
    """SVC-001: file:///abs/dir and a plain path store under that directory, verified."""
    url = tmp_path.as_uri() if form == "file_url" else str(tmp_path)
    blobs, manifests = open_storage(StorageConfig(url=url))
    blob = make_blob()
    blobs.write(blob.ref, [blob.stored])
    manifests.put_if_absent("main", HashName.BLAKE3, blob.ref.digest, b"doc")
    assert len(disk_names(tmp_path)) == 2
    with pytest.raises(BlobVerificationError):
        blobs.write(make_blob().ref, [blob.stored])


def test_memory_url_opens_verified_memory_storage() -> None:
    """memory:// serves tests; the blob store still verifies writes (RC-004)."""
    blobs, manifests = open_storage(StorageConfig(url="memory://"))
    blob = make_blob()
    blobs.write(blob.ref, [blob.stored])
    assert blobs.missing([blob.ref]) == []
    with pytest.raises(BlobVerificationError):
        blobs.write(make_blob().ref, [blob.stored])
    assert manifests.get("main", HashName.BLAKE3, blob.ref.digest) is None


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://host/x", "unsupported storage URL 'ftp://host/x'"),
        ("file://relative/dir", "needs an absolute path"),
        ("", "invalid storage URL ''"),
        ("s3://x", "invalid S3 bucket name 'x'"),
        ("s3://Bad_Bucket/p", "invalid S3 bucket name"),
        ("s3://bucket/a/../b", "invalid S3 key prefix"),
    ],
)
def test_bad_urls_are_value_errors_that_say_why(url: str, message: str) -> None:
    """SVC-003: a bad --storage value is rejected with a clear message."""
    with pytest.raises(ValueError, match=message):
        open_storage(StorageConfig(url=url))


def test_read_cache_without_s3_is_rejected(tmp_path: Path) -> None:
    """SVC-001: the read cache only makes sense in front of S3."""
    with pytest.raises(ValueError, match="only used in front of s3://"):
        open_storage(StorageConfig(url=str(tmp_path), read_cache_dir=tmp_path / "c"))


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials from the standard AWS chain (environment), as in production."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)


@pytest.mark.usefixtures("aws_env")
def test_s3_url_with_read_cache_and_metrics(seaweed: SeaweedS3, tmp_path: Path) -> None:
    """SVC-001/004: s3:// + read cache composes; reads fill the cache; metrics are labelled."""
    registry = CollectorRegistry()
    config = StorageConfig(
        url=f"s3://{BUCKET}/factory-{uuid.uuid4().hex[:8]}",
        s3_endpoint=seaweed.endpoint_url,
        s3_region=REGION,
        read_cache_dir=tmp_path / "cache",
        read_cache_size=1 << 20,
    )
    blobs, manifests = open_storage(config, registry=registry)
    blob = make_blob()
    blobs.write(blob.ref, [blob.stored])
    reader = blobs.open_read(blob.ref)
    assert reader is not None
    with reader:
        assert reader.read() == blob.stored
    assert manifests.put_if_absent("main", HashName.BLAKE3, blob.ref.digest, b"doc") is True
    assert manifests.get("main", HashName.BLAKE3, blob.ref.digest) == b"doc"
    assert any(name.endswith(f"-{blob.ref.size}") for name in disk_names(tmp_path / "cache"))
    ok = registry.get_sample_value(
        "haz_storage_operations_total", {"store": "s3", "operation": "write", "outcome": "ok"}
    )
    assert ok == 1


@pytest.mark.usefixtures("aws_env")
def test_s3_read_cache_needs_a_size(seaweed: SeaweedS3, tmp_path: Path) -> None:
    """SVC-001: the read cache is bounded; a missing size is a configuration error."""
    config = StorageConfig(
        url=f"s3://{BUCKET}/x", s3_endpoint=seaweed.endpoint_url, read_cache_dir=tmp_path
    )
    with pytest.raises(ValueError, match="needs a positive size"):
        open_storage(config)


@pytest.mark.usefixtures("aws_env")
def test_s3_bucket_that_does_not_exist_fails_at_open(seaweed: SeaweedS3) -> None:
    """SVC-001: a missing bucket is a clear StorageError when storage opens, not on first use."""
    config = StorageConfig(
        url="s3://absent-bucket/p", s3_endpoint=seaweed.endpoint_url, s3_region=REGION
    )
    with pytest.raises(StorageError, match="S3 bucket 'absent-bucket' does not exist"):
        open_storage(config)
