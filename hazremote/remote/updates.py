"""What happens to a remote execution, as values: the domain form of ``ExecutionUpdate``.

Spec coverage:
* RX-003 — queued (with its place), leased to a worker (attempt), failed with a reason.
* RX-005 — log chunks of stdout and stderr, by offset within the current attempt.
* RX-007, RX-008 — cancelled; completed with the exit code and the published manifest.
Out of scope: the wire (converted at each side's edge), who sends them (the scheduler).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "Cancelled",
    "Completed",
    "ExecutionUpdate",
    "Failed",
    "FailureReason",
    "Leased",
    "LogChunk",
    "LogStream",
    "Queued",
]


class LogStream(enum.Enum):
    STDOUT = "stdout"
    STDERR = "stderr"


class FailureReason(enum.Enum):
    """Why the service gave an execution up (the wire ``FailureReason``)."""

    UNSPECIFIED = "unspecified"
    NO_WORKER_FOR_PLATFORM = "no-worker-for-platform"
    RETRIES_EXHAUSTED = "retries-exhausted"
    REJECTED = "rejected"
    WORKER_ERROR = "worker-error"


@dataclass(frozen=True, slots=True, kw_only=True)
class Queued:
    execution_id: str
    position: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Leased:
    worker_id: str
    attempt: int  # 1-based; a later attempt restarts both streams at offset 0


@dataclass(frozen=True, slots=True, kw_only=True)
class LogChunk:
    """``data`` of ``stream`` starting at byte ``offset`` of the current attempt's stream."""

    stream: LogStream
    data: bytes
    offset: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Completed:
    """The process ended; ``manifest_json`` is the published manifest (exit 0 only)."""

    exit_code: int
    manifest_json: bytes | None
    duration_ms: int
    timed_out: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Failed:
    reason: FailureReason
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Cancelled:
    execution_cancelled: bool = True  # False: only this submitter's interest ended


ExecutionUpdate = Queued | Leased | LogChunk | Completed | Failed | Cancelled
