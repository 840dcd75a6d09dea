"""The Prometheus metrics of the service.

Spec coverage:
* SVC-004 — RPCs and latencies by method and status, bytes, storage errors, lookups by result.
* RX-003 (issue 15) — :class:`SchedulerMetrics`: queue depth and wait per pool, executions by
  outcome, lease expiries, workers and free slots.
Out of scope: serving them (``cache_service.app``), counting them (the interceptor).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["SchedulerMetrics", "ServiceMetrics"]


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


class SchedulerMetrics:
    """The execution queue's :class:`~cache_service.scheduling.SchedulerObserver`, as
    Prometheus metrics in ``registry``; ``pool`` is the platform (``name=value,…``)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.depth = Gauge(
            "haz_cache_execution_queue_depth",
            "Executions waiting for a worker, by pool",
            ["pool"],
            registry=registry,
        )
        self.wait = Histogram(
            "haz_cache_execution_queue_wait_seconds",
            "Time from (re)queueing to a lease, by pool",
            ["pool"],
            registry=registry,
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800),
        )
        self.executions = Counter(
            "haz_cache_executions",
            "Executions ended, by pool and outcome (success, exit, timed-out, cancelled, "
            "no-worker-for-platform, retries-exhausted, rejected, worker-error)",
            ["pool", "outcome"],
            registry=registry,
        )
        self.lease_expiries = Counter(
            "haz_cache_lease_expiries",
            "Leases that expired without a heartbeat, by pool",
            ["pool"],
            registry=registry,
        )
        self.workers_connected = Gauge(
            "haz_cache_workers", "Connected workers, by pool", ["pool"], registry=registry
        )
        self.free_slots = Gauge(
            "haz_cache_worker_free_slots",
            "Free execution slots of connected workers, by pool",
            ["pool"],
            registry=registry,
        )

    def queue_depth(self, *, pool: str, depth: int) -> None:
        self.depth.labels(pool=pool).set(depth)

    def queue_wait(self, *, pool: str, seconds: float) -> None:
        self.wait.labels(pool=pool).observe(seconds)

    def execution_finished(self, *, pool: str, outcome: str) -> None:
        self.executions.labels(pool=pool, outcome=outcome).inc()

    def lease_expired(self, *, pool: str) -> None:
        self.lease_expiries.labels(pool=pool).inc()

    def workers(self, *, pool: str, workers: int, free_slots: int) -> None:
        self.workers_connected.labels(pool=pool).set(workers)
        self.free_slots.labels(pool=pool).set(free_slots)
