"""The one place that turns storage configuration into composed stores.

Spec coverage:
* SVC-001 — ``file://``/a path → disk, ``s3://`` → S3 (with read caches), ``memory://`` → tests.
* RC-004 — the blob store is always wrapped in :class:`VerifyingBlobStore`.
* SVC-004 — both stores are wrapped in metrics decorators when a registry is given.
* SVC-003 — takes the server's parsed :class:`StorageConfig`.
Out of scope: creating parents beyond the store root, and buckets (absent: a StorageError).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from prometheus_client import CollectorRegistry

from cache_service.storage.base import BlobStore, ManifestStore
from cache_service.storage.disk import DiskBlobStore, DiskManifestStore
from cache_service.storage.manifest_caching import ReadCachingManifestStore
from cache_service.storage.memory import MemoryBlobStore, MemoryManifestStore
from cache_service.storage.metrics import MetricsBlobStore, MetricsManifestStore, StorageMetrics
from cache_service.storage.read_caching import ReadCachingBlobStore
from cache_service.storage.s3 import (
    S3BlobStore,
    S3Location,
    S3ManifestStore,
    S3Settings,
    check_bucket,
    make_s3_client,
)
from cache_service.storage.verifying import VerifyingBlobStore

__all__ = ["StorageConfig", "disk_roots", "open_storage"]


@dataclass(frozen=True, kw_only=True)
class StorageConfig:
    """Where and how the cache service stores blobs and manifests.

    Attributes:
        url: ``file:///abs/dir``, a plain directory path, ``s3://bucket/prefix`` or
            ``memory://``.
        s3_endpoint: S3 endpoint URL (None: AWS, or ``AWS_ENDPOINT_URL``).
        s3_region: S3 region (None: the standard AWS chain).
        read_cache_dir: local directory caching S3 reads (only with ``s3://``).
        read_cache_size: bound of the read cache in stored bytes (required with the dir).
        read_cache_manifest_ttl: with a read cache, seconds a found manifest is served from
            memory (bounded staleness; 0: manifests always read from S3).
        fsync: fsync every file written by disk stores.
    """

    url: str
    s3_endpoint: str | None = None
    s3_region: str | None = None
    read_cache_dir: Path | None = None
    read_cache_size: int | None = None
    read_cache_manifest_ttl: float = 30.0
    fsync: bool = False


def _disk_root(url: str) -> Path | None:
    """The directory of a ``file://`` URL or plain path; None for other schemes."""
    if url.startswith("file:"):
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise ValueError(
                f"invalid storage URL {url!r}: a file URL needs an absolute path (file:///abs/dir)"
            )
        return Path(unquote(parts.path))
    if "://" in url:
        return None
    if not url:
        raise ValueError("invalid storage URL '': expected file:///DIR, DIR, s3://BUCKET/PREFIX")
    return Path(url).expanduser().absolute()


def _leaves(config: StorageConfig) -> tuple[BlobStore, ManifestStore, str]:
    url = config.url
    root = _disk_root(url)
    if config.read_cache_dir is not None and not url.startswith("s3://"):
        raise ValueError("a read cache (read_cache_dir) is only used in front of s3:// storage")
    if root is not None:
        return (
            DiskBlobStore(root, fsync=config.fsync),
            DiskManifestStore(root, fsync=config.fsync),
            "disk",
        )
    if url == "memory://":
        return MemoryBlobStore(), MemoryManifestStore(), "memory"
    if url.startswith("s3://"):
        location = S3Location.parse(url)
        client = make_s3_client(
            S3Settings(endpoint_url=config.s3_endpoint, region=config.s3_region)
        )
        check_bucket(client, location.bucket)
        blobs: BlobStore = S3BlobStore(client=client, location=location)
        manifests: ManifestStore = S3ManifestStore(client=client, location=location)
        if config.read_cache_dir is None:
            return blobs, manifests, "s3"
        if config.read_cache_size is None or config.read_cache_size <= 0:
            raise ValueError("a read cache needs a positive size (read_cache_size)")
        if config.read_cache_manifest_ttl < 0:
            raise ValueError("read_cache_manifest_ttl must not be negative")
        fast = DiskBlobStore(config.read_cache_dir, fsync=False)
        cached = ReadCachingBlobStore(slow=blobs, fast=fast, max_bytes=config.read_cache_size)
        if config.read_cache_manifest_ttl > 0:
            manifests = ReadCachingManifestStore(
                inner=manifests, ttl_s=config.read_cache_manifest_ttl
            )
        return cached, manifests, "s3"
    scheme = url.partition("://")[0]
    raise ValueError(
        f"unsupported storage URL {url!r} (scheme {scheme!r}): expected file:///DIR, DIR, "
        "s3://BUCKET/PREFIX or memory://"
    )


def disk_roots(config: StorageConfig) -> tuple[Path, ...]:
    """The directories of the disk stores ``config`` composes (the ``file://`` store, or the
    read cache in front of S3), whose crash leftovers housekeeping removes (issue 13).

    Raises:
        ValueError: the URL is invalid.
    """
    root = _disk_root(config.url)
    if root is not None:
        return (root,)
    if config.read_cache_dir is not None and config.url.startswith("s3://"):
        return (config.read_cache_dir,)
    return ()


def open_storage(
    config: StorageConfig, *, registry: CollectorRegistry | None = None
) -> tuple[BlobStore, ManifestStore]:
    """Compose the blob and manifest stores that ``config`` describes.

    Raises:
        ValueError: the URL or the read-cache settings are invalid (message says how).
        StorageError: the storage cannot be reached (e.g. the S3 bucket does not exist).
    """
    blobs, manifests, label = _leaves(config)
    if registry is not None:
        metrics = StorageMetrics(registry)
        blobs = MetricsBlobStore(inner=blobs, metrics=metrics, store=label)
        manifests = MetricsManifestStore(inner=manifests, metrics=metrics, store=label)
    return VerifyingBlobStore(inner=blobs), manifests
