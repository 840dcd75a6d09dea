"""The Execution wire edge: actions out, updates in (RX-002/005), no gRPC call made.

Spec coverage: RX-002 — every action field reaches the wire message; RX-005/007 — every
update kind converts to its domain value, an unknown one is skipped.
"""

from __future__ import annotations

from hazremote.domain.digest import digest_bytes
from hazremote.domain.model import CommandAction, HashName, ShellAction
from hazremote.remote.action import ActionInput, Platform, PredecessorOutputs, RemoteAction
from hazremote.remote.action_wire import action_to_wire
from hazremote.remote.execution import (
    Cancelled,
    Completed,
    Failed,
    FailureReason,
    Leased,
    LogChunk,
    LogStream,
    Queued,
)
from hazremote.remote.grpc_execution import update_from_wire
from hazremote.wire.haz.remote.v1 import execution_pb2

HASH = HashName.BLAKE3


def test_an_action_reaches_the_wire_whole() -> None:
    digest = digest_bytes(HASH, b"x")
    item = ActionInput(path="/a", digest=digest, size=1, mode=0o755)
    action = RemoteAction(
        task="app:build",
        namespace="main",
        hash_name=HASH,
        key=digest,
        key_components_json=b"{}",
        command=CommandAction(argv=("make", "all")),
        env=(("A", "1"),),
        cwd="app",
        inputs=(item,),
        predecessor_outputs=(PredecessorOutputs(task="lib:build", files=(item,)),),
        output_patterns=("/app/dist/**",),
        platform=Platform.of({"pool": "large"}),
        timeout_ms=5,
        grace_period_ms=6,
        priority_ms=7,
    )
    wire = action_to_wire(action)
    assert list(wire.argv.argv) == ["make", "all"]
    assert (wire.task, wire.namespace, wire.cwd, bytes(wire.key)) == (
        "app:build",
        "main",
        "app",
        digest.raw,
    )
    assert [(i.path, i.mode, i.digest.size_bytes) for i in wire.inputs] == [("/a", 0o755, 1)]
    assert wire.predecessor_outputs[0].task == "lib:build"
    assert [(p.name, p.value) for p in wire.platform] == [("pool", "large")]
    assert [(p.name, p.value) for p in wire.env] == [("A", "1")]
    assert (wire.timeout_ms, wire.grace_period_ms, wire.priority_ms) == (5, 6, 7)
    shell = action_to_wire(
        RemoteAction(
            task="t:t",
            namespace="main",
            hash_name=HASH,
            key=digest,
            key_components_json=b"{}",
            command=ShellAction(shell="sh", script="echo"),
        )
    )
    assert (shell.shell.shell, shell.shell.script) == ("sh", "echo")


def test_every_update_converts() -> None:
    U = execution_pb2.ExecutionUpdate
    table = [
        (U(queued=U.Queued(execution_id="e", position=2)), Queued(execution_id="e", position=2)),
        (U(leased=U.Leased(worker_id="w", attempt=3)), Leased(worker_id="w", attempt=3)),
        (
            U(log=U.LogChunk(stream=execution_pb2.LOG_STREAM_STDERR, data=b"x", offset=4)),
            LogChunk(stream=LogStream.STDERR, data=b"x", offset=4),
        ),
        (
            U(completed=U.Completed(exit_code=1, manifest_json=b"m", duration_ms=9)),
            Completed(exit_code=1, manifest_json=b"m", duration_ms=9),
        ),
        (
            U(
                failed=U.Failed(
                    reason=execution_pb2.FAILURE_REASON_NO_WORKER_FOR_PLATFORM, message="none"
                )
            ),
            Failed(reason=FailureReason.NO_WORKER_FOR_PLATFORM, message="none"),
        ),
        (U(cancelled=U.Cancelled(execution_cancelled=True)), Cancelled()),
        (U(), None),
    ]
    for message, expected in table:
        assert update_from_wire(message) == expected
