"""MetricsBlobStore / MetricsManifestStore: Prometheus counters around any store (SVC-004).

Spec coverage:
* SVC-004 — operations, bytes, errors and latencies of the storage layer, exported on the
  server's metrics port through an injected :class:`prometheus_client.CollectorRegistry`:
  ``haz_storage_operations_total{store,operation,outcome}``,
  ``haz_storage_operation_seconds{store,operation}`` and
  ``haz_storage_bytes_total{store,direction}`` (stored bytes read and written).
Out of scope: RPC-level metrics (the server's interceptor) and logging (one event per RPC is
logged by the servicer, not per storage call).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, BinaryIO, Literal, TypeVar, cast

from prometheus_client import CollectorRegistry, Counter, Histogram

from cache_service.storage.base import (
    WOULD_BLOCK,
    BlobInfo,
    BlobRef,
    BlobStore,
    ManifestInfo,
    ManifestStore,
    ReadingRaw,
    StoredChunk,
    WouldBlock,
)
from hazremote.domain.digest import Digest
from hazremote.domain.model import HashName

__all__ = ["MetricsBlobStore", "MetricsManifestStore", "StorageMetrics"]

_T = TypeVar("_T")
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class StorageMetrics:
    """The storage metric families, registered once on ``registry`` and shared by decorators."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.operations = Counter(
            "haz_storage_operations_total",
            "Storage operations by store, operation and outcome (ok, error).",
            ["store", "operation", "outcome"],
            registry=registry,
        )
        self.seconds = Histogram(
            "haz_storage_operation_seconds",
            "Latency of storage operations (a read or write: until its stream is consumed).",
            ["store", "operation"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.bytes = Counter(
            "haz_storage_bytes_total",
            "Stored (compressed) bytes moved by the storage layer, by direction (read, write).",
            ["store", "direction"],
            registry=registry,
        )

        # Label children resolved once: ``labels()`` locks and hashes on every call.
        self._series: dict[tuple[str, str, bool], tuple[Any, Any]] = {}
        self._bytes: dict[tuple[str, str], Any] = {}

    def observe(self, store: str, operation: str, started: float, *, ok: bool) -> None:
        series = self._series.get((store, operation, ok))
        if series is None:
            series = (
                self.operations.labels(store, operation, "ok" if ok else "error"),
                self.seconds.labels(store, operation),
            )
            self._series[(store, operation, ok)] = series
        series[0].inc()
        series[1].observe(time.perf_counter() - started)

    def moved(self, store: str, direction: str, count: int) -> None:
        """Count ``count`` stored bytes read or written (``direction``)."""
        child = self._bytes.get((store, direction))
        if child is None:
            child = self._bytes[(store, direction)] = self.bytes.labels(store, direction)
        child.inc(count)

    def timed(self, store: str, operation: str, call: Callable[[], _T]) -> _T:
        started = time.perf_counter()
        try:
            result = call()
        except BaseException:
            self.observe(store, operation, started, ok=False)
            raise
        self.observe(store, operation, started, ok=True)
        return result


class _CountingReader(ReadingRaw):
    """Counts the bytes read; :meth:`read` hands out the inner reader's chunks as they are (no
    buffer in between, so a chunk is not copied: issue 5)."""

    def __init__(self, inner: BinaryIO, metrics: StorageMetrics, store: str) -> None:
        self._inner = inner
        self._metrics = metrics
        self._store = store
        self._started = time.perf_counter()
        self._failed = False

    def read(self, size: int | None = -1) -> bytes:
        try:
            data = self._inner.read(-1 if size is None else size)
        except BaseException:
            self._failed = True
            self._metrics.observe(self._store, "read_stream", self._started, ok=False)
            raise
        self._metrics.moved(self._store, "read", len(data))
        return data

    def readall(self) -> bytes:
        return self.read(-1)

    def close(self) -> None:
        if not self.closed:
            self._inner.close()
            if not self._failed:
                self._metrics.observe(self._store, "read_stream", self._started, ok=True)
        super().close()


#: Written bytes are added to ``haz_storage_bytes_total`` in steps of at least this many.
_COUNT_STEP = 1 << 20


class MetricsBlobStore:
    """Decorator counting a blob store's operations, bytes, errors and latencies.

    Args:
        inner: the measured store.
        metrics: shared metric families (:class:`StorageMetrics`).
        store: the ``store`` label (e.g. ``disk``, ``s3``, ``read_cache``).
    """

    def __init__(self, *, inner: BlobStore, metrics: StorageMetrics, store: str) -> None:
        self._inner = inner
        self._metrics = metrics
        self._store = store

    def missing(self, refs: Sequence[BlobRef]) -> list[BlobRef]:
        return self._metrics.timed(self._store, "missing", lambda: self._inner.missing(refs))

    def open_read(self, ref: BlobRef) -> BinaryIO | None:
        reader = self._metrics.timed(self._store, "open_read", lambda: self._inner.open_read(ref))
        if reader is None:
            return None
        return cast(BinaryIO, _CountingReader(reader, self._metrics, self._store))

    def write(self, ref: BlobRef, stored: Iterable[StoredChunk]) -> None:
        def counted() -> Iterator[StoredChunk]:
            # Counted every MiB or so (and at the end): a raw-block frame comes as 16 chunks
            # per MiB, and the counter locks on every increment.
            pending = 0
            try:
                for chunk in stored:
                    pending += len(chunk)
                    if pending >= _COUNT_STEP:
                        self._metrics.moved(self._store, "write", pending)
                        pending = 0
                    yield chunk
            finally:
                if pending:
                    self._metrics.moved(self._store, "write", pending)

        self._metrics.timed(self._store, "write", lambda: self._inner.write(ref, counted()))

    def delete(self, ref: BlobRef) -> None:
        self._metrics.timed(self._store, "delete", lambda: self._inner.delete(ref))

    def iterate(self) -> Iterator[BlobInfo]:
        return self._inner.iterate()


class MetricsManifestStore:
    """Decorator counting a manifest store's operations, bytes, errors and latencies."""

    def __init__(self, *, inner: ManifestStore, metrics: StorageMetrics, store: str) -> None:
        self._inner = inner
        self._metrics = metrics
        self._store = store

    def get(self, namespace: str, hash_name: HashName, key: Digest) -> bytes | None:
        document = self._metrics.timed(
            self._store, "manifest_get", lambda: self._inner.get(namespace, hash_name, key)
        )
        if document is not None:
            self._metrics.moved(self._store, "read", len(document))
        return document

    def get_nowait(
        self, namespace: str, hash_name: HashName, key: Digest
    ) -> bytes | Literal[WouldBlock.WOULD_BLOCK] | None:
        """Counted as a ``manifest_get`` when it answers; a :data:`WOULD_BLOCK` is not an
        operation (the :meth:`get` that follows is)."""
        started = time.perf_counter()
        try:
            document = self._inner.get_nowait(namespace, hash_name, key)
        except BaseException:
            self._metrics.observe(self._store, "manifest_get", started, ok=False)
            raise
        if document is WOULD_BLOCK:
            return document
        self._metrics.observe(self._store, "manifest_get", started, ok=True)
        if document is not None:
            self._metrics.moved(self._store, "read", len(document))
        return document

    def put_if_absent(
        self, namespace: str, hash_name: HashName, key: Digest, document: bytes
    ) -> bool:
        stored = self._metrics.timed(
            self._store,
            "manifest_put_if_absent",
            lambda: self._inner.put_if_absent(namespace, hash_name, key, document),
        )
        if stored:
            self._metrics.moved(self._store, "write", len(document))
        return stored

    def replace(self, namespace: str, hash_name: HashName, key: Digest, document: bytes) -> None:
        self._metrics.timed(
            self._store,
            "manifest_replace",
            lambda: self._inner.replace(namespace, hash_name, key, document),
        )
        self._metrics.moved(self._store, "write", len(document))

    def delete(self, namespace: str, hash_name: HashName, key: Digest) -> None:
        self._metrics.timed(
            self._store, "manifest_delete", lambda: self._inner.delete(namespace, hash_name, key)
        )

    def iterate(self, namespace: str | None = None) -> Iterator[ManifestInfo]:
        return self._inner.iterate(namespace)
