"""``gc`` and ``admin``: bounding storage growth and auditing producers (OPS-003, SEC-006)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import zstandard

from cache_service.housekeeping import GcPolicy, collect_garbage, list_producers, purge_producer
from cache_service.manifests import ManifestService, referenced_blobs
from cache_service.storage.base import BlobInfo, BlobRef, ManifestInfo
from cache_service.storage.factory import StorageConfig, open_storage
from cache_service.storage.memory import MemoryBlobStore, MemoryManifestStore
from hazremote.cache.manifest import Manifest
from hazremote.domain.digest import digest_bytes
from tests.cache_service.server.serverkit import HASH, make_manifest

COMMAND = str(Path(sys.executable).parent / "haz-cache-service")
NOW = 2_000_000_000.0


class AgedBlobs(MemoryBlobStore):
    """Memory blobs whose ages the test sets (the clock of a real store is the wall clock)."""

    def __init__(self) -> None:
        super().__init__()
        self.ages: dict[BlobRef, float] = {}

    def iterate(self) -> Iterator[BlobInfo]:
        for info in super().iterate():
            yield dataclasses.replace(info, modified_unix=NOW - self.ages.get(info.ref, 0.0))


class AgedManifests(MemoryManifestStore):
    def __init__(self) -> None:
        super().__init__()
        self.ages: dict[bytes, float] = {}

    def iterate(self, namespace: str | None = None) -> Iterator[ManifestInfo]:
        for info in super().iterate(namespace):
            yield dataclasses.replace(info, modified_unix=NOW - self.ages.get(info.key.raw, 0.0))


def _ref(data: bytes) -> BlobRef:
    return BlobRef(hash_name=HASH, digest=digest_bytes(HASH, data), size=len(data))


def _store(blobs: MemoryBlobStore, *datas: bytes) -> None:
    for data in datas:
        blobs.write(_ref(data), [zstandard.ZstdCompressor().compress(data)])


def _put(
    blobs: MemoryBlobStore,
    manifests: MemoryManifestStore,
    manifest: Manifest,
    *,
    producer: str = "ci",
    namespace: str = "main",
) -> None:
    service = ManifestService(manifests=manifests, blobs=blobs, max_batch_items=100)
    assert service.put(namespace, HASH, manifest.key, manifest.to_json(), producer=producer)


def _world() -> tuple[AgedBlobs, AgedManifests, Manifest, Manifest]:
    """An old and a young manifest sharing stderr; each with its own stdout."""
    blobs, manifests = AgedBlobs(), AgedManifests()
    _store(blobs, b"old out", b"young out", b"shared err")
    old = make_manifest(key_label="old", stdout=b"old out", stderr=b"shared err")
    young = make_manifest(key_label="young", stdout=b"young out", stderr=b"shared err")
    _put(blobs, manifests, old)
    _put(blobs, manifests, young)
    manifests.ages[old.key.raw] = 40 * 86400
    manifests.ages[young.key.raw] = 86400
    for data in (b"old out", b"young out", b"shared err"):
        blobs.ages[_ref(data)] = 40 * 86400
    return blobs, manifests, old, young


def test_gc_by_age_deletes_old_manifests_then_their_unshared_blobs() -> None:
    """OPS-003: manifests first, then blobs no surviving manifest references."""
    blobs, manifests, old, young = _world()
    _store(blobs, b"upload in progress")  # young and unreferenced: within the grace period
    report = collect_garbage(
        blobs=blobs, manifests=manifests, policy=GcPolicy(max_age=30 * 86400), now=NOW
    )
    assert (report.manifests_deleted, report.blobs_deleted) == (1, 1)
    assert manifests.get("main", HASH, old.key) is None
    assert manifests.get("main", HASH, young.key) is not None
    assert blobs.missing([_ref(b"old out")]) == [_ref(b"old out")]
    assert blobs.missing(referenced_blobs(young)) == []
    assert blobs.missing([_ref(b"upload in progress")]) == []


def test_gc_dry_run_reports_without_deleting() -> None:
    blobs, manifests, old, _young = _world()
    report = collect_garbage(
        blobs=blobs,
        manifests=manifests,
        policy=GcPolicy(max_age=30 * 86400, dry_run=True),
        now=NOW,
    )
    assert (report.manifests_deleted, report.blobs_deleted) == (1, 1)
    assert "would delete 1 manifest(s)" in report.render(dry_run=True)
    assert manifests.get("main", HASH, old.key) is not None
    assert blobs.missing([_ref(b"old out")]) == []


def test_gc_by_size_removes_oldest_manifests_until_the_store_fits() -> None:
    """OPS-003 by total size: the oldest manifest goes first, the young one stays."""
    blobs, manifests, old, young = _world()
    total = sum(i.stored_bytes for i in blobs.iterate()) + sum(
        i.stored_bytes for i in manifests.iterate()
    )
    report = collect_garbage(
        blobs=blobs, manifests=manifests, policy=GcPolicy(max_size=total - 1), now=NOW
    )
    assert report.manifests_deleted == 1
    assert manifests.get("main", HASH, old.key) is None
    assert manifests.get("main", HASH, young.key) is not None
    report = collect_garbage(blobs=blobs, manifests=manifests, policy=GcPolicy(max_size=1), now=NOW)
    assert manifests.get("main", HASH, young.key) is None
    assert list(blobs.iterate()) == []


def test_gc_deletes_manifests_that_no_longer_parse() -> None:
    """A corrupt manifest protects nothing (SEC-004): gc removes it."""
    blobs, manifests, old, _young = _world()
    manifests.replace("main", HASH, old.key, b"{garbage")
    report = collect_garbage(blobs=blobs, manifests=manifests, policy=GcPolicy(), now=NOW)
    assert report.manifests_deleted == 1
    assert manifests.get("main", HASH, old.key) is None


def test_list_and_purge_producers() -> None:
    """SEC-006: an operator lists producers and purges what one wrote, per namespace."""
    blobs, manifests = MemoryBlobStore(), MemoryManifestStore()
    _store(blobs, b"out\n", b"")
    for label, producer, namespace in (
        ("a", "ci-main", "main"),
        ("b", "ci-pr", "pr-1"),
        ("c", "ci-pr", "pr-2"),
    ):
        _put(
            blobs, manifests, make_manifest(key_label=label), producer=producer, namespace=namespace
        )
    summaries = {s.producer: s for s in list_producers(manifests)}
    assert summaries["ci-pr"].manifests == 2
    assert summaries["ci-pr"].namespaces == ("pr-1", "pr-2")
    assert purge_producer(manifests, producer="ci-pr", namespace="pr-1") == 1
    assert purge_producer(manifests, producer="ci-pr") == 1
    assert [s.producer for s in list_producers(manifests)] == ["ci-main"]


def test_gc_and_admin_commands_on_a_disk_store(tmp_path: Path) -> None:
    """The real commands work on the storage the service uses (same storage flags)."""
    store = tmp_path / "store"
    blobs, manifests = open_storage(StorageConfig(url=str(store)))
    blobs.write(_ref(b"out\n"), [zstandard.ZstdCompressor().compress(b"out\n")])
    blobs.write(_ref(b""), [zstandard.ZstdCompressor().compress(b"")])
    manifest = make_manifest(key_label="disk")
    service = ManifestService(manifests=manifests, blobs=blobs, max_batch_items=10)
    service.put("main", HASH, manifest.key, manifest.to_json(), producer="ci-main")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [COMMAND, *args, "--storage", str(store)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    listing = run("admin", "list-producers")
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.strip() == "ci-main\t1\tmain"
    dry = run("gc", "--max-age", "0s", "--blob-grace", "0s", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would delete 1 manifest(s)" in dry.stdout
    assert manifests.get("main", HASH, manifest.key) is not None
    done = run("gc", "--max-age", "0s", "--blob-grace", "0s")
    assert "deleted 1 manifest(s)" in done.stdout
    assert "2 blob(s)" in done.stdout
    assert manifests.get("main", HASH, manifest.key) is None
    assert run("admin", "purge", "--producer", "x", "--namespace", "bad ns").returncode == 2
    assert run("gc", "--max-age", "soon").returncode == 2
