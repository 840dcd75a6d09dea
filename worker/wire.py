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

from hazremote.remote.action import RemoteAction
from hazremote.remote.action_wire import ActionWireError
from hazremote.remote.action_wire import action_from_wire as read_action
from hazremote.wire.haz.remote.v1 import execution_pb2

__all__ = ["Lease", "LeaseMalformed", "action_from_wire", "lease_from_wire"]


class LeaseMalformed(ValueError):
    """The leased action cannot be read (a malformed digest, no command, an unknown hash)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Lease:
    """One lease the service gave this worker (RX-003)."""

    lease_id: str
    execution_id: str
    action: RemoteAction
    lease_duration_ms: int


def action_from_wire(message: execution_pb2.Action) -> RemoteAction:
    """The action of a lease (:func:`hazremote.remote.action_wire.action_from_wire`).

    Raises:
        LeaseMalformed: naming what cannot be read.
    """
    try:
        return read_action(message)
    except ActionWireError as exc:
        raise LeaseMalformed(str(exc)) from None


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
