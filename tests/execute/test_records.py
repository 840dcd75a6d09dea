"""``classify`` beside the records: a process outcome as the record EXEC-009 names.

Spec coverage: EXEC-009 (succeeded / failed / cancelled; spawn errors and timeouts fail
without a usable exit code), EXEC-021 (a spawn error has no source: dependants are
``upstream-errored``).
"""

from __future__ import annotations

import pytest

from hazremote.domain.digest import Digest
from hazremote.domain.refs import TaskId
from hazremote.execute.records import (
    CancelledRecord,
    CompletedRecord,
    RunSource,
    RunState,
    classify,
)
from hazremote.execute.spawn import ProcessOutcome

KEY = Digest(bytes(32))
OUT = Digest(b"o" * 32)
ERR = Digest(b"e" * 32)
TASK = TaskId("app", "build")


@pytest.mark.parametrize(
    ("outcome", "state", "source", "exit_code", "error"),
    [
        (ProcessOutcome(exit_code=0), RunState.SUCCEEDED, RunSource.FRESH, 0, None),
        (ProcessOutcome(exit_code=3), RunState.FAILED, RunSource.FRESH, 3, None),
        (ProcessOutcome(signal=9), RunState.FAILED, RunSource.FRESH, None, None),
        (
            ProcessOutcome(spawn_error="command not found: x"),
            RunState.FAILED,
            None,
            None,
            "command not found: x",
        ),
        (
            ProcessOutcome(exit_code=0, timed_out=True),
            RunState.FAILED,
            RunSource.FRESH,
            None,
            "timed out after 2.0s",
        ),
    ],
)
def test_a_process_outcome_becomes_its_record(
    outcome: ProcessOutcome,
    state: RunState,
    source: RunSource | None,
    exit_code: int | None,
    error: str | None,
) -> None:
    """EXEC-009: only exit 0 succeeds; a timeout fails even if the process then exited 0."""
    record = classify(TASK, outcome, key=KEY, timeout_s=2.0)
    assert isinstance(record, CompletedRecord)
    assert (record.state, record.source, record.exit_code, record.error) == (
        state,
        source,
        exit_code,
        error,
    )
    assert record.errored is (source is None)


def test_streams_and_duration_are_carried_over() -> None:
    outcome = ProcessOutcome(exit_code=0, duration_s=1.25, stdout_digest=OUT, stderr_digest=ERR)
    record = classify(TASK, outcome, key=KEY, timeout_s=None)
    assert isinstance(record, CompletedRecord)
    assert (record.duration_ms, record.stdout_digest, record.stderr_digest, record.key) == (
        1250,
        OUT,
        ERR,
        KEY,
    )


def test_a_cancelled_process_is_a_cancelled_record() -> None:
    """EXEC-012..015: cancellation wins over whatever the process exited with."""
    record = classify(
        TASK, ProcessOutcome(signal=15, cancelled=True, duration_s=0.5), key=KEY, timeout_s=None
    )
    assert record == CancelledRecord(task=TASK, source=RunSource.FRESH, key=KEY, duration_ms=500)
