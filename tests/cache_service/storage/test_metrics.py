"""MetricsBlobStore / MetricsManifestStore count operations, bytes, errors (SVC-004)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from cache_service.storage.base import BlobVerificationError
from cache_service.storage.memory import MemoryBlobStore, MemoryManifestStore
from cache_service.storage.metrics import MetricsBlobStore, MetricsManifestStore, StorageMetrics
from cache_service.storage.verifying import VerifyingBlobStore
from hazremote.domain.model import HashName
from tests.cache_service.storage.conftest import large_random_blob, make_blob


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_blob_operations_bytes_and_errors_are_counted() -> None:
    """SVC-004: each operation is counted by outcome, bytes by direction, latency observed."""
    registry = CollectorRegistry()
    metrics = StorageMetrics(registry)
    store = VerifyingBlobStore(
        inner=MetricsBlobStore(inner=MemoryBlobStore(), metrics=metrics, store="memory")
    )
    blob = make_blob(b"m" * 1000)
    store.write(blob.ref, [blob.stored])
    reader = store.open_read(blob.ref)
    assert reader is not None
    with reader:
        assert reader.read() == blob.stored
    store.missing([blob.ref])
    bad = make_blob(b"n" * 1000)
    with pytest.raises(BlobVerificationError):
        store.write(bad.ref, [blob.stored])

    ops = "haz_storage_operations_total"
    assert _value(registry, ops, store="memory", operation="write", outcome="ok") == 1
    assert _value(registry, ops, store="memory", operation="write", outcome="error") == 1
    assert _value(registry, ops, store="memory", operation="open_read", outcome="ok") == 1
    assert _value(registry, ops, store="memory", operation="read_stream", outcome="ok") == 1
    assert _value(registry, ops, store="memory", operation="missing", outcome="ok") == 1
    assert _value(registry, "haz_storage_bytes_total", store="memory", direction="read") == len(
        blob.stored
    )
    assert _value(registry, "haz_storage_bytes_total", store="memory", direction="write") >= len(
        blob.stored
    )
    assert (
        _value(registry, "haz_storage_operation_seconds_count", store="memory", operation="write")
        == 2
    )


def test_manifest_operations_are_counted() -> None:
    """SVC-004: manifest gets and puts are counted, stored-or-not included."""
    registry = CollectorRegistry()
    store = MetricsManifestStore(
        inner=MemoryManifestStore(), metrics=StorageMetrics(registry), store="disk"
    )
    key = make_blob().ref.digest
    assert store.put_if_absent("main", HashName.BLAKE3, key, b"doc") is True
    assert store.put_if_absent("main", HashName.BLAKE3, key, b"doc") is False
    assert store.get("main", HashName.BLAKE3, key) == b"doc"
    with pytest.raises(ValueError, match="invalid namespace"):
        store.get("../etc", HashName.BLAKE3, key)
    ops = "haz_storage_operations_total"
    assert (
        _value(registry, ops, store="disk", operation="manifest_put_if_absent", outcome="ok") == 2
    )
    assert _value(registry, ops, store="disk", operation="manifest_get", outcome="ok") == 1
    assert _value(registry, ops, store="disk", operation="manifest_get", outcome="error") == 1
    assert _value(registry, "haz_storage_bytes_total", store="disk", direction="write") == 3
    assert _value(registry, "haz_storage_bytes_total", store="disk", direction="read") == 3


def test_written_bytes_are_counted_in_steps_and_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    """SVC-004: a write of many small chunks (a raw-block frame: 16 per MiB) adds to the
    bytes counter about once per MiB, not per chunk, and the total is exact; a write that
    fails still counts the bytes that passed."""
    registry = CollectorRegistry()
    metrics = StorageMetrics(registry)
    steps: list[int] = []
    real = metrics.moved

    def moved(store: str, direction: str, count: int) -> None:
        steps.append(count)
        real(store, direction, count)

    monkeypatch.setattr(metrics, "moved", moved)
    store = MetricsBlobStore(inner=MemoryBlobStore(), metrics=metrics, store="memory")
    ref, stored = large_random_blob(mib=3, seed=17)
    pieces = [stored[i : i + 3] for i in range(0, 30, 3)] + [
        stored[i : i + 64 * 1024] for i in range(30, len(stored), 64 * 1024)
    ]
    store.write(ref, iter(pieces))
    assert sum(steps) == len(stored)
    assert len(steps) <= 4
    written = _value(registry, "haz_storage_bytes_total", store="memory", direction="write")
    assert written == len(stored)

    def failing() -> Iterator[bytes]:
        yield stored[:1000]
        raise OSError("client gone")

    with pytest.raises(OSError, match="client gone"):
        store.write(ref, failing())
    assert steps[-1] == 1000
