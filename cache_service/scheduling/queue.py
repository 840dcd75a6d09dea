"""The execution queue port, and the observer its metrics hang on.

Spec coverage:
* RX-010 — :class:`ExecutionQueue` is the pluggable seam (in-process now, Redis later).
* RX-003, RX-006, RX-007 — the operations clients and workers drive it with.
* Issue 15 metrics — :class:`SchedulerObserver` (queue depth and wait per pool, outcomes,
  lease expiries, workers and free slots).
Out of scope: admission (:mod:`.admission`), the wire, Prometheus (the servicer wires it).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from cache_service.scheduling.values import (
    LogStream,
    PoolStatus,
    ReleaseReason,
    Subscription,
    WorkerLink,
    WorkResult,
)
from hazremote.domain.digest import Digest
from hazremote.remote.action import Platform, RemoteAction

__all__ = ["ExecutionQueue", "NullSchedulerObserver", "SchedulerObserver"]


class ExecutionQueue(Protocol):
    """Queues admitted actions, leases them to matching workers, fans out their updates.

    Every action given to :meth:`submit` has passed admission. ``submitter`` is the
    authenticated identity (fairness and cancellation are per identity). Worker-side methods
    take the :class:`WorkerLink` of the session the message came on and return False when the
    message is refused (unknown, expired or superseded lease).
    """

    async def submit(
        self, action: RemoteAction, *, submitter: str, wait_for_worker: bool
    ) -> Subscription: ...

    async def attach(self, execution_id: str, *, submitter: str) -> Subscription | None: ...

    async def cancel(self, execution_id: str, *, submitter: str) -> bool | None:
        """True: the execution was cancelled; False: others still wait, or it had ended, or
        ``submitter`` was not waiting on it; None: unknown execution id."""
        ...

    async def connect_worker(
        self, *, worker_id: str, slots: int, platform: Platform, held_lease_ids: Iterable[str]
    ) -> WorkerLink: ...

    async def disconnect_worker(self, link: WorkerLink) -> None: ...

    async def heartbeat(self, link: WorkerLink, lease_ids: Iterable[str]) -> tuple[str, ...]:
        """Extend the leases; returns the ids not held by this link (told to cancel)."""
        ...

    async def log(
        self, link: WorkerLink, lease_id: str, *, stream: LogStream, data: bytes, offset: int
    ) -> bool: ...

    async def result(self, link: WorkerLink, lease_id: str, result: WorkResult) -> bool: ...

    async def release(
        self, link: WorkerLink, lease_id: str, *, reason: ReleaseReason, message: str = ""
    ) -> bool: ...

    async def expire_due(self) -> int:
        """Expire every lease past its deadline; returns how many expired."""
        ...

    async def pools(self) -> tuple[PoolStatus, ...]: ...

    async def leased_to(self, namespace: str, key: Digest) -> frozenset[str]:
        """The ids of the workers holding a live lease of the execution of ``key`` in
        ``namespace`` (whose result they may publish, SEC-006)."""
        ...


class SchedulerObserver(Protocol):
    """Metrics hooks; ``pool`` is the platform as ``name=value,…`` (``""``: no properties)."""

    def queue_depth(self, *, pool: str, depth: int) -> None: ...

    def queue_wait(self, *, pool: str, seconds: float) -> None: ...

    def execution_finished(self, *, pool: str, outcome: str) -> None: ...

    def lease_expired(self, *, pool: str) -> None: ...

    def workers(self, *, pool: str, workers: int, free_slots: int) -> None: ...


class NullSchedulerObserver:
    """Observes nothing (the default)."""

    def queue_depth(self, *, pool: str, depth: int) -> None:
        pass

    def queue_wait(self, *, pool: str, seconds: float) -> None:
        pass

    def execution_finished(self, *, pool: str, outcome: str) -> None:
        pass

    def lease_expired(self, *, pool: str) -> None:
        pass

    def workers(self, *, pool: str, workers: int, free_slots: int) -> None:
        pass
