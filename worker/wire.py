"""The worker's edge of the execution wire API: a ``ServerMessage.Lease`` as plain values.

Spec coverage:
* RX-002 — the leased action (argv or shell, env, cwd, inputs, predecessor outputs, outputs,
  platform, timeout, grace period, key and components) read into a :class:`RemoteAction`.
* RC-004 — digests are 32 raw bytes and a non-negative size, else the lease is malformed.
Out of scope: checking the action (the service admitted it; the sandbox refuses hostile
paths again) and the messages the worker sends (built in :mod:`worker.agent`).
"""

from __future__ import annotations

from dataclasses import dataclass

from hazremote.domain.digest import DIGEST_SIZE, Digest
from hazremote.domain.model import Action, CommandAction, HashName, ShellAction
from hazremote.remote.action import ActionInput, Platform, PredecessorOutputs, RemoteAction
from hazremote.wire.haz.remote.v1 import digest_pb2, execution_pb2

__all__ = ["Lease", "LeaseMalformed", "action_from_wire", "lease_from_wire"]

_HASH_NAMES = {
    digest_pb2.HASH_FUNCTION_BLAKE3: HashName.BLAKE3,
    digest_pb2.HASH_FUNCTION_SHA256: HashName.SHA256,
}


class LeaseMalformed(ValueError):
    """The leased action cannot be read (a malformed digest, no command, an unknown hash)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Lease:
    """One lease the service gave this worker (RX-003)."""

    lease_id: str
    execution_id: str
    action: RemoteAction
    lease_duration_ms: int


def _digest(message: digest_pb2.Digest, where: str) -> tuple[Digest, int]:
    raw = bytes(message.hash)
    if len(raw) != DIGEST_SIZE or message.size_bytes < 0:
        raise LeaseMalformed(f"{where}: malformed digest")
    return Digest(raw), int(message.size_bytes)


def _input(message: execution_pb2.ActionInput) -> ActionInput:
    digest, size = _digest(message.digest, f"input {message.path!r}")
    return ActionInput(path=message.path, digest=digest, size=size, mode=int(message.mode))


def action_from_wire(message: execution_pb2.Action) -> RemoteAction:
    """The action of a lease.

    Raises:
        LeaseMalformed: naming what cannot be read.
    """
    hash_name = _HASH_NAMES.get(message.hash_function)
    if hash_name is None:
        raise LeaseMalformed(f"unknown hash function {message.hash_function}")
    if len(message.key) != DIGEST_SIZE:
        raise LeaseMalformed("the key is not 32 bytes")
    command: Action
    which = message.WhichOneof("command")
    if which == "argv":
        command = CommandAction(argv=tuple(message.argv.argv))
    elif which == "shell":
        command = ShellAction(shell=message.shell.shell, script=message.shell.script)
    else:
        raise LeaseMalformed("the action has no command")
    return RemoteAction(
        task=message.task,
        namespace=message.namespace,
        hash_name=hash_name,
        key=Digest(bytes(message.key)),
        key_components_json=bytes(message.key_components_json),
        command=command,
        env=tuple((p.name, p.value) for p in message.env),
        cwd=message.cwd,
        inputs=tuple(_input(i) for i in message.inputs),
        predecessor_outputs=tuple(
            PredecessorOutputs(task=p.task, files=tuple(_input(f) for f in p.files))
            for p in message.predecessor_outputs
        ),
        output_patterns=tuple(message.output_patterns),
        platform=Platform.of({p.name: p.value for p in message.platform}),
        timeout_ms=int(message.timeout_ms),
        grace_period_ms=int(message.grace_period_ms),
        priority_ms=int(message.priority_ms),
    )


def lease_from_wire(message: execution_pb2.ServerMessage.Lease) -> Lease:
    """``ServerMessage.Lease`` → :class:`Lease`.

    Raises:
        LeaseMalformed: the action cannot be read.
    """
    return Lease(
        lease_id=message.lease_id,
        execution_id=message.execution_id,
        action=action_from_wire(message.action),
        lease_duration_ms=int(message.lease_duration_ms),
    )
