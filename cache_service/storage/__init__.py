"""Storage of the cache service: ports (:mod:`.base`), leaves, decorators and the factory."""

from cache_service.storage.base import (
    BlobInfo,
    BlobNotFoundError,
    BlobRef,
    BlobStore,
    BlobVerificationError,
    ManifestInfo,
    ManifestStore,
    StorageError,
)

__all__ = [
    "BlobInfo",
    "BlobNotFoundError",
    "BlobRef",
    "BlobStore",
    "BlobVerificationError",
    "ManifestInfo",
    "ManifestStore",
    "StorageError",
]
