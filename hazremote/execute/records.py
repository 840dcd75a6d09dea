"""What happened to each task of a run, as values.

Spec coverage:
* EXEC-009 — :class:`RunState`; :func:`classify` turns a process outcome into its record.
* EXEC-011 — :class:`SkipRecord` names the root failed task.
* EXEC-041 — :func:`summary_json`: the versioned summary of SPEC §4, every task once, in order.
* RC-008 — :class:`RunSource` includes ``remote-cache`` and ``remote-exec``.
Out of scope: how the records are produced (:mod:`.scheduler`, :mod:`.lifecycle`).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hazremote.domain.digest import Digest
from hazremote.domain.refs import TaskId
from hazremote.domain.units import format_duration

if TYPE_CHECKING:
    from hazremote.execute.spawn import ProcessOutcome

__all__ = [
    "SUMMARY_VERSION",
    "CancelledRecord",
    "CompletedRecord",
    "RunSource",
    "RunState",
    "SkipCause",
    "SkipRecord",
    "TaskRecord",
    "classify",
    "summary_json",
]

SUMMARY_VERSION = 1


class RunState(enum.Enum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


class RunSource(enum.Enum):
    FRESH = "fresh"
    LOCAL_CACHE = "local-cache"
    REMOTE_CACHE = "remote-cache"
    REMOTE_EXEC = "remote-exec"

    @property
    def is_hit(self) -> bool:
        return self in (RunSource.LOCAL_CACHE, RunSource.REMOTE_CACHE)


class SkipCause(enum.Enum):
    UPSTREAM_FAILED = "upstream-failed"
    UPSTREAM_ERRORED = "upstream-errored"
    UPSTREAM_CANCELLED = "upstream-cancelled"
    RUNTIME_CYCLE = "runtime-cycle"
    OUTPUT_OVERLAP = "output-overlap"


@dataclass(frozen=True, slots=True, kw_only=True)
class CompletedRecord:
    """A task that finished: succeeded (fresh or restored) or failed.

    ``source`` is None for a task that failed before it could spawn (``error`` says why).
    ``signal`` is set when the process was killed by a signal; ``error`` for a missing input,
    a command that could not start, or a timeout. A succeeded task carries its stream digests
    and ``outputs_digest`` (CACHE-007: what its dependants' keys include), computed once.
    """

    task: TaskId
    state: RunState
    source: RunSource | None
    key: Digest | None
    duration_ms: int
    exit_code: int | None = None
    signal: int | None = None
    error: str | None = None
    stdout_digest: Digest | None = None
    stderr_digest: Digest | None = None
    outputs_digest: Digest | None = None
    warnings: tuple[str, ...] = ()
    worker: str | None = None  # RX: the remote worker that ran it (source ``remote-exec``)

    @property
    def errored(self) -> bool:
        """A key error or a spawn failure: dependants are skipped as ``upstream-errored``."""
        return self.state is RunState.FAILED and self.source is None


@dataclass(frozen=True, slots=True, kw_only=True)
class SkipRecord:
    task: TaskId
    cause: SkipCause
    upstream: TaskId | None
    state: RunState = RunState.SKIPPED


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelledRecord:
    task: TaskId
    source: RunSource | None = None
    key: Digest | None = None
    duration_ms: int | None = None
    state: RunState = RunState.CANCELLED


TaskRecord = CompletedRecord | SkipRecord | CancelledRecord


def classify(
    task: TaskId, outcome: ProcessOutcome, *, key: Digest, timeout_s: float | None
) -> CompletedRecord | CancelledRecord:
    """EXEC-009: a process outcome as a record (the caller adds stream digests)."""
    duration_ms = int(outcome.duration_s * 1000)
    if outcome.cancelled:
        return CancelledRecord(task=task, source=RunSource.FRESH, key=key, duration_ms=duration_ms)
    state = RunState.FAILED
    source: RunSource | None = RunSource.FRESH
    error: str | None = None
    if outcome.spawn_error is not None:
        source, error = None, outcome.spawn_error
    elif outcome.timed_out:
        error = f"timed out after {format_duration(timeout_s or 0.0)}"
    elif outcome.exit_code == 0:
        state = RunState.SUCCEEDED
    return CompletedRecord(
        task=task,
        state=state,
        source=source,
        key=key,
        duration_ms=duration_ms,
        exit_code=None if outcome.timed_out else outcome.exit_code,
        signal=outcome.signal,
        error=error,
        stdout_digest=outcome.stdout_digest,
        stderr_digest=outcome.stderr_digest,
    )


def _record_json(record: TaskRecord) -> dict[str, object]:
    base: dict[str, object] = {"task": str(record.task), "state": record.state.value}
    if isinstance(record, SkipRecord):
        base |= {
            "source": None,
            "key": None,
            "skip_cause": {
                "kind": record.cause.value,
                "upstream": str(record.upstream) if record.upstream else None,
            },
        }
        return base
    base["source"] = record.source.value if record.source else None
    base["key"] = record.key.hex if record.key else None
    if isinstance(record, CancelledRecord):
        if record.duration_ms is not None:
            base["duration_ms"] = record.duration_ms
        return base
    base["duration_ms"] = record.duration_ms
    base["exit_code"] = record.exit_code
    if record.signal is not None:
        base["signal"] = record.signal
    if record.error is not None:
        base["error"] = record.error
    if record.worker is not None:  # absent otherwise: local runs keep their bytes
        base["worker"] = record.worker
    return base


def summary_json(
    *, exit_code: int, duration_ms: int, records: Iterable[TaskRecord]
) -> dict[str, object]:
    """EXEC-041: the summary document, tasks in canonical order."""
    ordered = sorted(records, key=lambda r: r.task)
    return {
        "version": SUMMARY_VERSION,
        "exit_code": exit_code,
        "duration_ms": duration_ms,
        "tasks": [_record_json(r) for r in ordered],
    }
