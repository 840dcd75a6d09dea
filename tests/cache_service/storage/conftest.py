"""Fixtures of the storage contract suite: one SeaweedFS per session, a store per backend."""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from cache_service.storage.base import BlobRef, BlobStore, ManifestStore
from cache_service.storage.disk import DiskBlobStore, DiskManifestStore
from cache_service.storage.manifest_caching import ReadCachingManifestStore
from cache_service.storage.memory import MemoryBlobStore, MemoryManifestStore
from cache_service.storage.read_caching import ReadCachingBlobStore
from cache_service.storage.s3 import (
    S3BlobStore,
    S3Location,
    S3ManifestStore,
    S3Settings,
    make_s3_client,
)
from cache_service.storage.verifying import compress_bytes
from hazremote.domain.digest import digest_bytes
from hazremote.domain.model import HashName
from tests.support.fixtures import BUCKET, seaweed
from tests.support.seaweedfs import ACCESS_KEY, REGION, SECRET_KEY, SeaweedS3

# The session SeaweedFS is shared with tests/remote (one ~1 GB server per process).
__all__ = ["BUCKET", "seaweed"]


def s3_settings(endpoint_url: str, **overrides: Any) -> S3Settings:
    values: dict[str, Any] = {
        "endpoint_url": endpoint_url,
        "region": REGION,
        "access_key_id": ACCESS_KEY,
        "secret_access_key": SECRET_KEY,
    }
    values.update(overrides)
    return S3Settings(**values)


@dataclass
class S3Env:
    """A fresh key prefix in the session bucket, so tests never see each other's objects."""

    server: SeaweedS3
    client: Any
    location: S3Location

    def object_names(self) -> set[str]:
        """Every key under this prefix, relative to it."""
        paginator = self.client.get_paginator("list_objects_v2")
        names: set[str] = set()
        for page in paginator.paginate(Bucket=BUCKET, Prefix=self.location.prefix):
            names.update(
                obj["Key"][len(self.location.prefix) :] for obj in page.get("Contents", [])
            )
        return names


@pytest.fixture
def s3_env(seaweed: SeaweedS3) -> S3Env:
    client = make_s3_client(s3_settings(seaweed.endpoint_url))
    location = S3Location(bucket=BUCKET, prefix=f"t-{uuid.uuid4().hex[:12]}/")
    return S3Env(server=seaweed, client=client, location=location)


def disk_names(root: Path) -> set[str]:
    """Every file under ``root``, relative, in POSIX form (temp files included)."""
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


@dataclass
class BlobBackend:
    """A leaf (or composite) blob store under test, and how to list its raw object names."""

    name: str
    store: BlobStore
    names: Callable[[], set[str]] | None


BLOB_BACKENDS = ["memory", "disk", "s3", "read_cache_over_memory", "read_cache_over_s3"]


@pytest.fixture(params=BLOB_BACKENDS)
def blob_backend(request: pytest.FixtureRequest, tmp_path: Path) -> BlobBackend:
    kind: str = request.param
    if kind == "memory":
        return BlobBackend(kind, MemoryBlobStore(), None)
    if kind == "disk":
        root = tmp_path / "store"
        return BlobBackend(kind, DiskBlobStore(root), lambda: disk_names(root))
    if kind == "read_cache_over_memory":
        fast = DiskBlobStore(tmp_path / "cache")
        store = ReadCachingBlobStore(slow=MemoryBlobStore(), fast=fast, max_bytes=64 << 20)
        return BlobBackend(kind, store, None)
    env: S3Env = request.getfixturevalue("s3_env")
    s3 = S3BlobStore(client=env.client, location=env.location)
    if kind == "s3":
        return BlobBackend(kind, s3, env.object_names)
    fast = DiskBlobStore(tmp_path / "cache")
    store = ReadCachingBlobStore(slow=s3, fast=fast, max_bytes=64 << 20)
    return BlobBackend(kind, store, env.object_names)


@dataclass
class ManifestBackend:
    name: str
    store: ManifestStore
    names: Callable[[], set[str]] | None


@pytest.fixture(params=["memory", "disk", "s3", "manifest_cache_over_s3"])
def manifest_backend(request: pytest.FixtureRequest, tmp_path: Path) -> ManifestBackend:
    kind: str = request.param
    if kind == "memory":
        return ManifestBackend(kind, MemoryManifestStore(), None)
    if kind == "disk":
        root = tmp_path / "store"
        return ManifestBackend(kind, DiskManifestStore(root), lambda: disk_names(root))
    env: S3Env = request.getfixturevalue("s3_env")
    s3 = S3ManifestStore(client=env.client, location=env.location)
    if kind == "s3":
        return ManifestBackend(kind, s3, env.object_names)
    return ManifestBackend(kind, ReadCachingManifestStore(inner=s3, ttl_s=30), env.object_names)


@dataclass(frozen=True)
class Blob:
    """A test blob: its uncompressed bytes, ref and stored form."""

    data: bytes
    ref: BlobRef
    stored: bytes


def make_blob(data: bytes | None = None, *, hash_name: HashName = HashName.BLAKE3) -> Blob:
    if data is None:
        data = os.urandom(random.randint(1, 3000))
    ref = BlobRef(hash_name=hash_name, digest=digest_bytes(hash_name, data), size=len(data))
    return Blob(data=data, ref=ref, stored=compress_bytes(data))


def damaged_blob(data: bytes, case: str) -> tuple[Blob, BlobRef, bytes]:
    """RC-004 write cases: the honest blob of ``data``, and the ref and stored bytes of the
    damage named by ``case`` (a claim or a body that does not match)."""
    good = make_blob(data)
    ref, stored = good.ref, good.stored
    if case == "wrong_digest":
        other = make_blob(bytes(reversed(data)))
        ref = BlobRef(hash_name=HashName.BLAKE3, digest=other.ref.digest, size=len(data))
    elif case == "size_too_small":
        ref = BlobRef(hash_name=ref.hash_name, digest=ref.digest, size=ref.size - 1)
    elif case == "size_too_large":
        ref = BlobRef(hash_name=ref.hash_name, digest=ref.digest, size=ref.size + 1)
    elif case == "garbage":
        stored = b"\x00 definitely not zstd" * 4
    elif case == "corrupt_body":
        stored = stored[:20] + bytes(b ^ 0x5A for b in stored[20:40]) + stored[40:]
    elif case == "not_compressed":
        stored = data
    elif case == "truncated":
        stored = stored[:-3]
    elif case == "two_frames":
        stored = stored + compress_bytes(b"")
    else:
        raise ValueError(f"unknown damage {case!r}")
    return good, ref, stored


MIB = 1024 * 1024


def large_random_blob(*, mib: int, seed: int) -> tuple[BlobRef, bytes]:
    """A ``mib``-MiB incompressible blob built chunk by chunk: its ref and its stored form.

    The digest is known only after every byte was seen, as when a client streams a file.
    """
    from cache_service.storage.verifying import compress_chunks
    from hazremote.domain.digest import Digest, new_hasher

    rng = random.Random(seed)
    hasher = new_hasher(HashName.BLAKE3)

    def source() -> Iterator[bytes]:
        for _ in range(mib):
            chunk = rng.randbytes(MIB)
            hasher.update(chunk)
            yield chunk

    stored = b"".join(compress_chunks(source(), level=1))
    ref = BlobRef(hash_name=HashName.BLAKE3, digest=Digest(hasher.digest()), size=mib * MIB)
    return ref, stored


def assert_decodes_to(reader: BinaryIO, ref: BlobRef) -> None:
    """The stored form read back decompresses to ``ref``'s size and digest (RC-004)."""
    from cache_service.storage.verifying import decompress_chunks
    from hazremote.domain.digest import new_hasher

    check = new_hasher(ref.hash_name)
    total = 0
    for chunk in decompress_chunks(reader):
        check.update(chunk)
        total += len(chunk)
    assert (total, check.digest()) == (ref.size, ref.digest.raw)
