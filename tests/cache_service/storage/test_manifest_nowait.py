"""``ManifestStore.get_nowait``: the event-loop fast path of lookups (issue 5, SVC-001).

Every backend either answers exactly what ``get`` answers or says ``WOULD_BLOCK``; the disk
leaf answers from the page cache only; the metrics decorator counts an answer as one
``manifest_get`` and a ``WOULD_BLOCK`` as nothing (the ``get`` that follows is counted).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from botocore.utils import parse_timestamp
from prometheus_client import CollectorRegistry

from cache_service.storage.base import WOULD_BLOCK
from cache_service.storage.disk import DiskManifestStore
from cache_service.storage.memory import MemoryManifestStore
from cache_service.storage.metrics import MetricsManifestStore, StorageMetrics
from cache_service.storage.s3 import _parse_timestamp
from hazremote.domain.digest import Digest, digest_bytes
from hazremote.domain.model import HashName
from tests.cache_service.manifestkit import RecordingManifests
from tests.cache_service.storage.conftest import ManifestBackend

B3 = HashName.BLAKE3


def _key(label: str) -> Digest:
    return digest_bytes(B3, label.encode())


def test_get_nowait_answers_what_get_answers_or_would_block(
    manifest_backend: ManifestBackend,
) -> None:
    """A hit, a miss and another namespace: the same answers as ``get`` (S3: WOULD_BLOCK,
    since every S3 read is a round trip; memory and a cached disk file: always an answer;
    the manifest cache over S3: its own write from memory, misses from S3)."""
    store, key = manifest_backend.store, _key("nowait")
    store.put_if_absent("main", B3, key, b'{"doc": 1}')
    answers = [
        store.get_nowait("main", B3, key),
        store.get_nowait("main", B3, _key("absent")),
        store.get_nowait("other", B3, key),
    ]
    if manifest_backend.name == "s3":
        assert answers == [WOULD_BLOCK] * 3
    elif manifest_backend.name == "manifest_cache_over_s3":
        assert answers == [b'{"doc": 1}', WOULD_BLOCK, WOULD_BLOCK]
    else:
        assert answers == [b'{"doc": 1}', None, None]
        assert answers[0] == store.get("main", B3, key)


def test_get_nowait_rejects_invalid_namespaces(manifest_backend: ManifestBackend) -> None:
    """SEC-003 holds on the fast path too (S3 never builds a name: nothing to reject)."""
    if manifest_backend.name in ("s3", "manifest_cache_over_s3"):
        pytest.skip("S3 answers WOULD_BLOCK before naming anything; get() then rejects")
    with pytest.raises(ValueError, match="invalid namespace"):
        manifest_backend.store.get_nowait("../x", B3, _key("x"))


def test_disk_leaves_large_documents_to_the_thread_pool(tmp_path: Path) -> None:
    """A document too large to copy on the event loop is WOULD_BLOCK even when cached."""
    store = DiskManifestStore(tmp_path)
    small, large = _key("small"), _key("large")
    store.put_if_absent("main", B3, small, b"s" * 1000)
    store.put_if_absent("main", B3, large, b"l" * (1 << 20))
    assert store.get_nowait("main", B3, small) == b"s" * 1000
    assert store.get_nowait("main", B3, large) is WOULD_BLOCK
    assert store.get("main", B3, large) == b"l" * (1 << 20)


def test_disk_answers_would_block_when_the_page_cache_lacks_the_document(
    tmp_path: Path,
) -> None:
    """Bytes not in the page cache are never read on the event loop (RWF_NOWAIT)."""
    if not hasattr(os, "RWF_NOWAIT") or not hasattr(os, "posix_fadvise"):
        pytest.skip("no preadv(RWF_NOWAIT) on this platform: disk always WOULD_BLOCKs")
    store = DiskManifestStore(tmp_path, fsync=True)
    key = _key("evicted")
    document = os.urandom(64 << 10)
    store.put_if_absent("main", B3, key, document)
    path = next(p for p in tmp_path.rglob("*") if p.is_file())
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        try:
            os.preadv(fd, [bytearray(len(document))], 0, os.RWF_NOWAIT)
        except BlockingIOError:
            pass
        else:
            pytest.skip("this file system keeps the pages (tmpfs, or no RWF_NOWAIT support)")
    finally:
        os.close(fd)
    assert store.get_nowait("main", B3, key) is WOULD_BLOCK
    assert store.get("main", B3, key) == document


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_metrics_count_nowait_answers_but_not_would_block() -> None:
    """SVC-004: an answered fast-path read is one ``manifest_get`` (with its bytes); a
    WOULD_BLOCK is no operation, so a lookup is never counted twice."""
    registry = CollectorRegistry()
    metrics = StorageMetrics(registry)
    fast = MetricsManifestStore(inner=MemoryManifestStore(), metrics=metrics, store="memory")
    slow = MetricsManifestStore(inner=RecordingManifests(blocks=True), metrics=metrics, store="s3")
    key = _key("counted")
    fast.put_if_absent("main", B3, key, b"12345")
    slow.put_if_absent("main", B3, key, b"12345")

    assert fast.get_nowait("main", B3, key) == b"12345"
    assert fast.get_nowait("main", B3, _key("absent")) is None
    assert slow.get_nowait("main", B3, key) is WOULD_BLOCK

    ops = "haz_storage_operations_total"
    assert _value(registry, ops, store="memory", operation="manifest_get", outcome="ok") == 2
    assert _value(registry, ops, store="s3", operation="manifest_get", outcome="ok") == 0
    assert (
        _value(
            registry,
            "haz_storage_operation_seconds_count",
            store="memory",
            operation="manifest_get",
        )
        == 2
    )
    assert _value(registry, "haz_storage_bytes_total", store="memory", direction="read") == 5
    assert _value(registry, "haz_storage_bytes_total", store="s3", direction="read") == 0


def test_metrics_count_a_failing_nowait_read_as_an_error() -> None:
    registry = CollectorRegistry()
    store = MetricsManifestStore(
        inner=MemoryManifestStore(), metrics=StorageMetrics(registry), store="memory"
    )
    with pytest.raises(ValueError, match="invalid namespace"):
        store.get_nowait("../etc", B3, _key("x"))
    assert (
        _value(
            registry,
            "haz_storage_operations_total",
            store="memory",
            operation="manifest_get",
            outcome="error",
        )
        == 1
    )


@pytest.mark.parametrize(
    "value",
    [
        "Wed, 21 Oct 2015 07:28:00 GMT",  # Last-Modified header
        "Sat, 01 Jan 2000 00:00:00 GMT",
        "2015-10-21T07:28:00.000Z",  # ListObjectsV2 LastModified
        "2015-10-21T07:28:00.123456Z",
        "2015-10-21T07:28:00Z",
        "2015-10-21T07:28:00+02:00",  # not a shape S3 sends: botocore's parser
        "1445412480",  # epoch seconds: botocore's parser
    ],
)
def test_s3_timestamp_parser_matches_botocore(value: str) -> None:
    """The dateutil-free parser gives botocore's values (aware datetimes, same instant)."""
    ours, theirs = _parse_timestamp(value), parse_timestamp(value)
    assert ours == theirs
    assert ours.utcoffset() == theirs.utcoffset()
