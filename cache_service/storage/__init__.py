"""Storage of the cache service: ports (:mod:`.base`), leaves, decorators and the factory."""

from cache_service.storage.base import (
    BlobInfo,
    BlobRef,
    BlobStore,
    BlobVerificationError,
    ManifestInfo,
    ManifestStore,
    StorageError,
)
from cache_service.storage.factory import StorageConfig, open_storage
from cache_service.storage.verifying import (
    BlobVerifier,
    compress_bytes,
    compress_chunks,
    decompress_chunks,
)

__all__ = [
    "BlobInfo",
    "BlobRef",
    "BlobStore",
    "BlobVerificationError",
    "BlobVerifier",
    "ManifestInfo",
    "ManifestStore",
    "StorageConfig",
    "StorageError",
    "compress_bytes",
    "compress_chunks",
    "decompress_chunks",
    "open_storage",
]
