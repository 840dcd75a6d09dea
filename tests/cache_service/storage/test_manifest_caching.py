"""ReadCachingManifestStore: found manifests served from memory for a bounded time (issue 5).

Decorator tests over a recording fake of our own ManifestStore port and an injected clock;
the purge case runs against the real SeaweedFS with two stores on one prefix (two processes'
views of the bucket), and the factory cases compose real S3 stores.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import pytest
from prometheus_client import CollectorRegistry

from cache_service.housekeeping import purge_producer
from cache_service.storage import StorageConfig, open_storage
from cache_service.storage.base import WOULD_BLOCK, ManifestInfo, StorageError, WouldBlock
from cache_service.storage.manifest_caching import ENTRY_OVERHEAD, ReadCachingManifestStore
from cache_service.storage.memory import MemoryManifestStore
from cache_service.storage.s3 import S3ManifestStore
from hazremote.domain.digest import Digest, digest_bytes
from hazremote.domain.model import HashName
from tests.cache_service.storage.conftest import BUCKET, S3Env
from tests.support.seaweedfs import ACCESS_KEY, REGION, SECRET_KEY

B3 = HashName.BLAKE3
TTL = 30.0


def _key(label: str) -> Digest:
    return digest_bytes(B3, label.encode())


class FakeClock:
    """Monotonic seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class CountingManifests:
    """Memory manifests that count reads and can run a hook in the middle of a read or fail
    writes (a fake of our own port)."""

    inner: MemoryManifestStore = field(default_factory=MemoryManifestStore)
    gets: int = 0
    during_get: Callable[[], None] | None = None
    fail_writes: bool = False

    def get(self, namespace: str, hash_name: HashName, key: Digest) -> bytes | None:
        self.gets += 1
        document = self.inner.get(namespace, hash_name, key)
        if self.during_get is not None:
            hook, self.during_get = self.during_get, None
            hook()  # runs after the read saw the store, before it returns
        return document

    def get_nowait(
        self, namespace: str, hash_name: HashName, key: Digest
    ) -> bytes | Literal[WouldBlock.WOULD_BLOCK] | None:
        return WOULD_BLOCK

    def put_if_absent(
        self, namespace: str, hash_name: HashName, key: Digest, document: bytes
    ) -> bool:
        if self.fail_writes:
            raise StorageError("S3 PUT failed")
        return self.inner.put_if_absent(namespace, hash_name, key, document)

    def replace(self, namespace: str, hash_name: HashName, key: Digest, document: bytes) -> None:
        if self.fail_writes:
            raise StorageError("S3 PUT failed")
        self.inner.replace(namespace, hash_name, key, document)

    def delete(self, namespace: str, hash_name: HashName, key: Digest) -> None:
        self.inner.delete(namespace, hash_name, key)

    def iterate(self, namespace: str | None = None) -> Iterator[ManifestInfo]:
        return self.inner.iterate(namespace)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def slow() -> CountingManifests:
    return CountingManifests()


@pytest.fixture
def cached(slow: CountingManifests, clock: FakeClock) -> ReadCachingManifestStore:
    return ReadCachingManifestStore(inner=slow, ttl_s=TTL, clock=clock)


def test_a_found_document_is_served_from_memory_and_without_io(
    slow: CountingManifests, cached: ReadCachingManifestStore
) -> None:
    """The first get reads the inner store; later gets and get_nowait answer from memory."""
    slow.inner.put_if_absent("main", B3, _key("a"), b"doc-a")
    assert cached.get_nowait("main", B3, _key("a")) is WOULD_BLOCK  # not read yet
    assert cached.get("main", B3, _key("a")) == b"doc-a"
    assert slow.gets == 1
    assert cached.get("main", B3, _key("a")) == b"doc-a"
    assert cached.get_nowait("main", B3, _key("a")) == b"doc-a"
    assert slow.gets == 1
    # Same key, other namespace or hash function: a different entry.
    assert cached.get_nowait("other", B3, _key("a")) is WOULD_BLOCK
    assert cached.get_nowait("main", HashName.SHA256, _key("a")) is WOULD_BLOCK


def test_misses_are_not_cached_so_another_writer_is_seen_at_once(
    slow: CountingManifests, cached: ReadCachingManifestStore
) -> None:
    """A miss asks the inner store every time: a put by another replica is visible at once."""
    assert cached.get("main", B3, _key("new")) is None
    assert cached.get_nowait("main", B3, _key("new")) is WOULD_BLOCK
    slow.inner.put_if_absent("main", B3, _key("new"), b"by another replica")
    assert cached.get("main", B3, _key("new")) == b"by another replica"
    assert slow.gets == 2


def test_entries_expire_after_the_ttl(
    slow: CountingManifests, cached: ReadCachingManifestStore, clock: FakeClock
) -> None:
    """Bounded staleness: a replacement made elsewhere is served after at most the TTL."""
    slow.inner.put_if_absent("main", B3, _key("a"), b"old")
    assert cached.get("main", B3, _key("a")) == b"old"
    slow.inner.replace("main", B3, _key("a"), b"new")  # another process replaces it
    clock.advance(TTL - 0.001)
    assert cached.get("main", B3, _key("a")) == b"old"
    assert cached.get_nowait("main", B3, _key("a")) == b"old"
    clock.advance(0.001)
    assert cached.get_nowait("main", B3, _key("a")) is WOULD_BLOCK
    assert cached.get("main", B3, _key("a")) == b"new"
    assert cached.get_nowait("main", B3, _key("a")) == b"new"


def test_the_ttl_counts_from_when_the_read_began(
    slow: CountingManifests, cached: ReadCachingManifestStore, clock: FakeClock
) -> None:
    """A slow read does not extend the staleness bound: its entry expires TTL after it began."""
    slow.inner.put_if_absent("main", B3, _key("a"), b"doc")
    slow.during_get = lambda: clock.advance(10)
    assert cached.get("main", B3, _key("a")) == b"doc"
    clock.advance(TTL - 10)
    assert cached.get_nowait("main", B3, _key("a")) is WOULD_BLOCK


def test_own_writes_update_or_drop_the_entry_at_once(
    slow: CountingManifests, cached: ReadCachingManifestStore
) -> None:
    """put_if_absent and replace cache what they wrote; delete and a refused put drop it."""
    assert cached.put_if_absent("main", B3, _key("a"), b"first")
    assert cached.get_nowait("main", B3, _key("a")) == b"first"
    cached.replace("main", B3, _key("a"), b"second")
    assert cached.get_nowait("main", B3, _key("a")) == b"second"
    assert cached.get("main", B3, _key("a")) == b"second"
    assert slow.gets == 0
    cached.delete("main", B3, _key("a"))
    assert cached.get_nowait("main", B3, _key("a")) is WOULD_BLOCK
    assert cached.get("main", B3, _key("a")) is None

    # A refused put_if_absent: another document is stored, maybe not the cached one.
    slow.inner.put_if_absent("main", B3, _key("b"), b"theirs")
    assert cached.get("main", B3, _key("b")) == b"theirs"
    slow.inner.replace("main", B3, _key("b"), b"theirs, replaced")
    assert not cached.put_if_absent("main", B3, _key("b"), b"mine")
    assert cached.get_nowait("main", B3, _key("b")) is WOULD_BLOCK
    assert cached.get("main", B3, _key("b")) == b"theirs, replaced"


def test_a_failed_write_drops_the_entry(
    slow: CountingManifests, cached: ReadCachingManifestStore
) -> None:
    """A write that raised may or may not have happened: the key is read again next time."""
    slow.inner.put_if_absent("main", B3, _key("a"), b"doc")
    assert cached.get("main", B3, _key("a")) == b"doc"
    slow.fail_writes = True
    with pytest.raises(StorageError):
        cached.replace("main", B3, _key("a"), b"other")
    assert cached.get_nowait("main", B3, _key("a")) is WOULD_BLOCK
    with pytest.raises(StorageError):
        cached.put_if_absent("main", B3, _key("c"), b"doc")
    assert cached.get_nowait("main", B3, _key("c")) is WOULD_BLOCK


def test_a_read_that_began_before_an_own_write_does_not_overwrite_it(
    slow: CountingManifests, cached: ReadCachingManifestStore
) -> None:
    """Ordering: a read that saw the old document and finishes after this process replaced
    or deleted it must not put the old document back in the cache."""
    slow.inner.put_if_absent("main", B3, _key("a"), b"old")
    slow.during_get = lambda: cached.replace("main", B3, _key("a"), b"new")
    assert cached.get("main", B3, _key("a")) == b"old"  # what that read saw
    assert cached.get_nowait("main", B3, _key("a")) == b"new"

    slow.inner.put_if_absent("main", B3, _key("b"), b"doomed")
    slow.during_get = lambda: cached.delete("main", B3, _key("b"))
    assert cached.get("main", B3, _key("b")) == b"doomed"
    assert cached.get_nowait("main", B3, _key("b")) is WOULD_BLOCK
    assert cached.get("main", B3, _key("b")) is None


def test_bytes_are_bounded_least_recently_used_first(
    slow: CountingManifests, clock: FakeClock
) -> None:
    """LRU by bytes: documents plus a per-entry overhead stay under the bound; the least
    recently used go first; a document larger than the bound is never kept."""
    doc = b"x" * 1000
    entry = len(doc) + ENTRY_OVERHEAD
    cached = ReadCachingManifestStore(inner=slow, ttl_s=TTL, max_bytes=3 * entry, clock=clock)
    for label in "abc":
        cached.put_if_absent("main", B3, _key(label), doc)
    assert cached.cached_bytes == 3 * entry
    assert cached.get_nowait("main", B3, _key("a")) == doc  # a is now the most recent
    cached.put_if_absent("main", B3, _key("d"), doc)
    assert cached.cached_bytes == 3 * entry
    assert cached.get_nowait("main", B3, _key("b")) is WOULD_BLOCK  # evicted
    for label in "acd":
        assert cached.get_nowait("main", B3, _key(label)) == doc
    big = b"y" * (3 * entry)
    cached.put_if_absent("main", B3, _key("big"), big)
    assert cached.get_nowait("main", B3, _key("big")) is WOULD_BLOCK
    assert cached.get("main", B3, _key("big")) == big  # still stored and readable
    assert cached.cached_bytes <= 3 * entry


def test_invalid_settings_are_refused(slow: CountingManifests) -> None:
    with pytest.raises(ValueError, match="TTL must be positive"):
        ReadCachingManifestStore(inner=slow, ttl_s=0)
    with pytest.raises(ValueError, match="size must be positive"):
        ReadCachingManifestStore(inner=slow, ttl_s=1, max_bytes=0)


def _manifest_json(key: Digest, producer: str) -> bytes:
    """A minimal CACHE-011 document of ``key`` written by ``producer``."""
    from hazremote.cache.manifest import (
        Compression,
        Manifest,
        RecordedKeyComponents,
        StreamRecord,
    )
    from hazremote.domain.model import CommandAction
    from hazremote.keys.framing import CHAPTER_REVISION

    empty = StreamRecord(hash=digest_bytes(B3, b""), size=0, compression=Compression.NONE)
    return Manifest(
        chapter_revision=CHAPTER_REVISION,
        hash_function=B3,
        key=key,
        created_at_unix=1_700_000_000,
        duration_ms=1,
        producer=producer,
        stdout=empty,
        stderr=empty,
        outputs=(),
        key_components=RecordedKeyComponents(
            action=CommandAction(argv=("true",)),
            inputs=(),
            predecessors=(),
            env=(),
            cwd="/",
            outputs=(),
        ),
    ).to_json()


def test_a_purge_by_another_process_is_seen_within_the_ttl(s3_env: S3Env, clock: FakeClock) -> None:
    """SEC-006 with S3: ``admin purge`` runs as its own process (here: its own store on the
    same bucket prefix); this replica serves the purged entry for at most the TTL."""
    replica = ReadCachingManifestStore(
        inner=S3ManifestStore(client=s3_env.client, location=s3_env.location),
        ttl_s=TTL,
        clock=clock,
    )
    admin = S3ManifestStore(client=s3_env.client, location=s3_env.location)
    key = _key("purged")
    document = _manifest_json(key, producer="leaked-token")
    assert replica.put_if_absent("main", B3, key, document)
    assert replica.get("main", B3, key) == document

    assert purge_producer(admin, producer="leaked-token", namespace=None) == 1
    assert admin.get("main", B3, key) is None
    clock.advance(TTL / 2)
    assert replica.get_nowait("main", B3, key) == document  # within the bound: still served
    clock.advance(TTL / 2)
    assert replica.get_nowait("main", B3, key) is WOULD_BLOCK
    assert replica.get("main", B3, key) is None


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials from the standard AWS chain (environment), as in production."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)


@pytest.mark.usefixtures("aws_env")
@pytest.mark.parametrize("ttl", [30.0, 0.0])
def test_the_factory_caches_s3_manifests_only_with_a_read_cache_and_a_ttl(
    s3_env: S3Env, tmp_path: Path, ttl: float
) -> None:
    """SVC-001: s3:// + --read-cache puts the manifest cache in front of S3 (get_nowait
    answers a warm lookup); a TTL of 0 turns it off; without a read cache it is absent."""
    url = f"s3://{BUCKET}/{s3_env.location.prefix.rstrip('/')}"
    common = StorageConfig(url=url, s3_endpoint=s3_env.server.endpoint_url, s3_region=REGION)
    _, manifests = open_storage(
        replace(
            common,
            read_cache_dir=tmp_path / "cache",
            read_cache_size=1 << 20,
            read_cache_manifest_ttl=ttl,
        ),
        registry=CollectorRegistry(),
    )
    _, uncached = open_storage(common)
    key = _key("factory")
    assert manifests.put_if_absent("main", B3, key, b"doc")
    assert manifests.get("main", B3, key) == b"doc"
    assert manifests.get_nowait("main", B3, key) == (b"doc" if ttl else WOULD_BLOCK)
    assert uncached.get("main", B3, key) == b"doc"
    assert uncached.get_nowait("main", B3, key) is WOULD_BLOCK


@pytest.mark.usefixtures("aws_env")
def test_the_factory_refuses_a_negative_ttl(s3_env: S3Env, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="read_cache_manifest_ttl"):
        open_storage(
            StorageConfig(
                url=f"s3://{BUCKET}/neg",
                s3_endpoint=s3_env.server.endpoint_url,
                s3_region=REGION,
                read_cache_dir=tmp_path / "cache",
                read_cache_size=1 << 20,
                read_cache_manifest_ttl=-1,
            )
        )
