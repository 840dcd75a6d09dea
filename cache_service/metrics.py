"""The Prometheus metrics of the service.

Spec coverage:
* SVC-004 — RPCs and latencies by method and status, bytes in/out, storage errors, manifest
  lookups by result (hit ratio = hits / all).
Out of scope: serving them (``cache_service.app``), counting them (the interceptor).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = ["ServiceMetrics"]


class ServiceMetrics:
    """The Prometheus metrics of one server, in their own registry (several servers may run in
    one process, e.g. in tests)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.rpcs = Counter(
            "haz_cache_rpcs",
            "RPCs handled, by method and status code",
            ["method", "code"],
            registry=r,
        )
        self.latency = Histogram(
            "haz_cache_rpc_duration_seconds",
            "RPC latency, by method and status code",
            ["method", "code"],
            registry=r,
            buckets=(
                0.0005,
                0.001,
                0.0025,
                0.005,
                0.01,
                0.025,
                0.05,
                0.1,
                0.25,
                0.5,
                1,
                2.5,
                5,
                10,
                30,
                60,
            ),
        )
        self.bytes_in = Counter(
            "haz_cache_received_bytes",
            "Request bytes received, by method",
            ["method"],
            registry=r,
        )
        self.bytes_out = Counter(
            "haz_cache_sent_bytes", "Response bytes sent, by method", ["method"], registry=r
        )
        self.storage_errors = Counter(
            "haz_cache_storage_errors",
            "RPCs or batch items that failed in storage",
            registry=r,
        )
        self.manifest_lookups = Counter(
            "haz_cache_manifest_lookups",
            "Manifest lookups by result (hit, miss)",
            ["result"],
            registry=r,
        )

        self._lookup_hits = self.manifest_lookups.labels(result="hit")
        self._lookup_misses = self.manifest_lookups.labels(result="miss")

    def manifest_lookup(self, hit: bool) -> None:
        (self._lookup_hits if hit else self._lookup_misses).inc()
