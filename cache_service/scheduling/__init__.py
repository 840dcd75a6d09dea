"""Remote-execution scheduling: the queue port, its in-process implementation, admission.

Spec coverage:
* RX-002 — :mod:`.admission` (key recomputation, hostile actions) before anything is queued.
* RX-003, RX-006, RX-007 — :mod:`.inprocess`.
* RX-010 — :class:`ExecutionQueue` is the pluggable seam.
Out of scope: the gRPC servicers and Prometheus wiring (they adapt these objects).
"""

from cache_service.scheduling.inprocess import InProcessExecutionQueue, SchedulingSettings
from cache_service.scheduling.queue import (
    ExecutionQueue,
    NullSchedulerObserver,
    SchedulerObserver,
)
from cache_service.scheduling.values import (
    CancelLease,
    Cancelled,
    Completed,
    ExecutionUpdate,
    Failed,
    FailureReason,
    Leased,
    LeaseGrant,
    LogChunk,
    LogStream,
    PoolStatus,
    Queued,
    ReleaseReason,
    ServerMessage,
    Subscription,
    WorkerLink,
    WorkResult,
)

__all__ = [
    "CancelLease",
    "Cancelled",
    "Completed",
    "ExecutionQueue",
    "ExecutionUpdate",
    "Failed",
    "FailureReason",
    "InProcessExecutionQueue",
    "LeaseGrant",
    "Leased",
    "LogChunk",
    "LogStream",
    "NullSchedulerObserver",
    "PoolStatus",
    "Queued",
    "ReleaseReason",
    "SchedulerObserver",
    "SchedulingSettings",
    "ServerMessage",
    "Subscription",
    "WorkResult",
    "WorkerLink",
]
