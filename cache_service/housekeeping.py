"""Bounding storage growth and auditing producers: ``gc`` and ``admin`` over the storage ports.

Synchronous and blocking; the command line runs it directly, beside running replicas.

Spec coverage:
* OPS-003 — :func:`collect_garbage`: manifests by age and size, then unreferenced old blobs.
* OPS-003 — :func:`sweep_temp_files`: dead writes' temp files, after ``temp_grace`` only.
* SEC-006 — :func:`list_producers` and :func:`purge_producer` (blobs are left to ``gc``).
* SEC-004 — a manifest that no longer parses protects nothing: ``gc`` deletes it.
Out of scope: scheduling (cron, a CronJob), S3 lifecycle rules (documented in the README).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cache_service.manifests import referenced_blobs, validate_namespace
from cache_service.storage.base import BlobStore, ManifestInfo, ManifestStore
from cache_service.storage.disk import TempSweep, remove_stale_temp_files
from hazremote.cache.manifest import Manifest, ManifestError, parse_manifest
from hazremote.domain.digest import Digest
from hazremote.domain.model import HashName

__all__ = [
    "GcPolicy",
    "GcReport",
    "ProducerSummary",
    "collect_garbage",
    "list_producers",
    "purge_producer",
    "sweep_temp_files",
]

_BlobKey = tuple[HashName, Digest]


@dataclass(frozen=True, slots=True, kw_only=True)
class GcPolicy:
    """What ``gc`` removes.

    Attributes:
        max_age: Manifests older than this many seconds go (None: no age bound).
        max_size: The oldest manifests go until manifests plus the blobs they alone held fit
            in this many stored bytes (None: no size bound).
        blob_grace: Unreferenced blobs younger than this many seconds stay.
        temp_grace: Temp files of unfinished writes untouched this many seconds go.
        dry_run: Report only.
    """

    max_age: float | None = None
    max_size: int | None = None
    blob_grace: float = 3600.0
    temp_grace: float = 3600.0
    dry_run: bool = False


@dataclass(slots=True, kw_only=True)
class GcReport:
    """What ``gc`` removed (or would remove, in a dry run)."""

    manifests_deleted: int = 0
    manifest_bytes: int = 0
    blobs_deleted: int = 0
    blob_bytes: int = 0
    manifests_kept: int = 0
    blobs_kept: int = 0
    bytes_kept: int = 0
    temps_deleted: int = 0
    temp_bytes: int = 0

    def render(self, *, dry_run: bool) -> str:
        verb = "would delete" if dry_run else "deleted"
        return (
            f"{verb} {self.manifests_deleted} manifest(s) ({self.manifest_bytes} bytes), "
            f"{self.blobs_deleted} blob(s) ({self.blob_bytes} bytes) and "
            f"{self.temps_deleted} stale temp file(s) ({self.temp_bytes} bytes); kept "
            f"{self.manifests_kept} manifest(s) and {self.blobs_kept} blob(s) "
            f"({self.bytes_kept} bytes)"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class _Entry:
    info: ManifestInfo
    manifest: Manifest | None
    blobs: frozenset[_BlobKey] = field(default_factory=frozenset)


def _load(manifests: ManifestStore, info: ManifestInfo) -> Manifest | None:
    document = manifests.get(info.namespace, info.hash_name, info.key)
    if document is None:
        return None
    try:
        declared = json.loads(document.decode("utf-8")).get("chapter_revision")
    except (ValueError, AttributeError, RecursionError):
        return None
    if not isinstance(declared, int) or isinstance(declared, bool):
        return None
    try:
        return parse_manifest(document, chapter_revision=declared, hash_name=info.hash_name)
    except ManifestError:
        return None


def _entries(manifests: ManifestStore) -> Iterator[_Entry]:
    for info in manifests.iterate():
        manifest = _load(manifests, info)
        keys = (
            frozenset((r.hash_name, r.digest) for r in referenced_blobs(manifest))
            if manifest is not None
            else frozenset()
        )
        yield _Entry(info=info, manifest=manifest, blobs=keys)


def sweep_temp_files(
    roots: Sequence[Path], *, grace: float, now: float, dry_run: bool = False
) -> TempSweep:
    """Issue 13: remove the temp files of dead writes under the disk stores at ``roots``
    untouched for ``grace`` seconds (:func:`.storage.disk.remove_stale_temp_files`)."""
    files = size = 0
    for root in roots:
        swept = remove_stale_temp_files(root, older_than=grace, now=now, dry_run=dry_run)
        files += swept.files
        size += swept.bytes
    return TempSweep(files=files, bytes=size)


def collect_garbage(
    *,
    blobs: BlobStore,
    manifests: ManifestStore,
    policy: GcPolicy,
    now: float,
    temp_roots: Sequence[Path] = (),
) -> GcReport:
    """OPS-003: delete expired manifests, then the oldest beyond ``max_size``, then blobs no
    surviving manifest references that are older than the grace period; and (issue 13) the
    temp files of dead writes under ``temp_roots`` older than ``policy.temp_grace``.

    Args:
        now: The current time (seconds since the epoch), passed in for testability.
        temp_roots: Directories of the disk stores behind ``blobs`` and ``manifests``.
    """
    entries = sorted(_entries(manifests), key=lambda e: e.info.modified_unix)
    blob_infos = {(b.ref.hash_name, b.ref.digest): b for b in blobs.iterate()}
    refcount: Counter[_BlobKey] = Counter()
    for entry in entries:
        refcount.update(entry.blobs)

    doomed: list[_Entry] = []
    survivors: list[_Entry] = []
    for entry in entries:
        expired = policy.max_age is not None and now - entry.info.modified_unix > policy.max_age
        if entry.manifest is None or expired:
            doomed.append(entry)
            refcount.subtract(entry.blobs)
        else:
            survivors.append(entry)

    def collectable(key: _BlobKey) -> bool:
        info = blob_infos.get(key)
        return (
            info is not None
            and refcount[key] <= 0
            and now - info.modified_unix >= policy.blob_grace
        )

    if policy.max_size is not None:
        total = sum(e.info.stored_bytes for e in survivors) + sum(
            info.stored_bytes for key, info in blob_infos.items() if not collectable(key)
        )
        while survivors and total > policy.max_size:
            oldest = survivors.pop(0)
            doomed.append(oldest)
            total -= oldest.info.stored_bytes
            for key in oldest.blobs:
                refcount[key] -= 1
                if refcount[key] == 0 and collectable(key):
                    total -= blob_infos[key].stored_bytes

    report = GcReport()
    for entry in doomed:
        report.manifests_deleted += 1
        report.manifest_bytes += entry.info.stored_bytes
        if not policy.dry_run:
            manifests.delete(entry.info.namespace, entry.info.hash_name, entry.info.key)
    for key, info in blob_infos.items():
        if collectable(key):
            report.blobs_deleted += 1
            report.blob_bytes += info.stored_bytes
            if not policy.dry_run:
                blobs.delete(info.ref)
        else:
            report.blobs_kept += 1
            report.bytes_kept += info.stored_bytes
    report.manifests_kept = len(survivors)
    report.bytes_kept += sum(e.info.stored_bytes for e in survivors)
    swept = sweep_temp_files(temp_roots, grace=policy.temp_grace, now=now, dry_run=policy.dry_run)
    report.temps_deleted, report.temp_bytes = swept.files, swept.bytes
    return report


@dataclass(frozen=True, slots=True, kw_only=True)
class ProducerSummary:
    """How many manifests a producer wrote, and where."""

    producer: str
    manifests: int
    namespaces: tuple[str, ...]


def list_producers(manifests: ManifestStore) -> list[ProducerSummary]:
    """SEC-006: every producer with its manifest count and namespaces, by name."""
    counts: Counter[str] = Counter()
    where: dict[str, set[str]] = {}
    for entry in _entries(manifests):
        if entry.manifest is None:
            continue
        name = entry.manifest.producer
        counts[name] += 1
        where.setdefault(name, set()).add(entry.info.namespace)
    return [
        ProducerSummary(
            producer=name, manifests=counts[name], namespaces=tuple(sorted(where[name]))
        )
        for name in sorted(counts)
    ]


def purge_producer(manifests: ManifestStore, *, producer: str, namespace: str | None = None) -> int:
    """SEC-006: delete every manifest ``producer`` wrote (in ``namespace``, or everywhere).

    Returns:
        How many manifests were deleted.
    """
    if namespace is not None:
        validate_namespace(namespace)
    deleted = 0
    for info in list(manifests.iterate(namespace)):
        manifest = _load(manifests, info)
        if manifest is not None and manifest.producer == producer:
            manifests.delete(info.namespace, info.hash_name, info.key)
            deleted += 1
    return deleted
