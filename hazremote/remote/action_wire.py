"""An action on the wire: ``haz.remote.v1.Action`` ↔ :class:`RemoteAction`, for all three sides.

Spec coverage:
* RX-002 — the client sends, the service admits and the worker runs the same action fields.
* RC-004 — digests are 32 raw bytes with a non-negative size, else the action is malformed.
Out of scope: whether an action is acceptable (the service's admission, the sandbox).
"""

from __future__ import annotations

from collections.abc import Iterable

from hazremote.domain.digest import DIGEST_SIZE, HASH_IDS, Digest
from hazremote.domain.model import Action, CommandAction, HashName, ShellAction
from hazremote.errors import HazError
from hazremote.remote.action import ActionInput, Platform, PredecessorOutputs, RemoteAction
from hazremote.wire.haz.remote.v1 import digest_pb2, execution_pb2

__all__ = ["ActionWireError", "action_from_wire", "action_to_wire", "platform_from_wire"]

_BY_ID: dict[int, HashName] = {number: name for name, number in HASH_IDS.items()}


class ActionWireError(HazError, ValueError):
    """A wire action cannot be read; the message names the task and the field."""


def platform_from_wire(properties: Iterable[digest_pb2.Property], what: str) -> Platform:
    """Wire properties as a :class:`Platform`; a property without a name or given twice is
    refused.

    Raises:
        ActionWireError: naming ``what``.
    """
    values: dict[str, str] = {}
    for prop in properties:
        if not prop.name:
            raise ActionWireError(f"{what}: a platform property has no name")
        if prop.name in values:
            raise ActionWireError(f"{what}: platform property {prop.name!r} is given twice")
        values[prop.name] = prop.value
    return Platform.of(values)


def _input(message: execution_pb2.ActionInput, task: str) -> ActionInput:
    digest = message.digest
    if len(digest.hash) != DIGEST_SIZE or digest.size_bytes < 0:
        raise ActionWireError(f"task {task}: input {message.path!r} has a malformed digest")
    return ActionInput(
        path=message.path,
        digest=Digest(bytes(digest.hash)),
        size=int(digest.size_bytes),
        mode=int(message.mode),
    )


def _command(message: execution_pb2.Action, task: str) -> Action:
    kind = message.WhichOneof("command")
    if kind == "argv":
        return CommandAction(argv=tuple(message.argv.argv))
    if kind == "shell":
        return ShellAction(shell=message.shell.shell, script=message.shell.script)
    raise ActionWireError(f"task {task}: the action has no command (argv or shell)")


def action_from_wire(message: execution_pb2.Action) -> RemoteAction:
    """A wire action as a :class:`RemoteAction` (its structure; admission checks the rest).

    Raises:
        ActionWireError: an unknown hash function, a key or digest of the wrong length, no
            command, a platform property twice.
    """
    task = message.task or "(unnamed)"
    hash_name = _BY_ID.get(message.hash_function)
    if hash_name is None:
        raise ActionWireError(f"task {task}: unknown hash function {message.hash_function}")
    if len(message.key) != DIGEST_SIZE:
        raise ActionWireError(
            f"task {task}: the key has {len(message.key)} bytes, expected {DIGEST_SIZE}"
        )
    return RemoteAction(
        task=task,
        namespace=message.namespace,
        hash_name=hash_name,
        key=Digest(bytes(message.key)),
        key_components_json=bytes(message.key_components_json),
        command=_command(message, task),
        env=tuple((prop.name, prop.value) for prop in message.env),
        cwd=message.cwd,
        inputs=tuple(_input(item, task) for item in message.inputs),
        predecessor_outputs=tuple(
            PredecessorOutputs(task=pred.task, files=tuple(_input(f, task) for f in pred.files))
            for pred in message.predecessor_outputs
        ),
        output_patterns=tuple(message.output_patterns),
        platform=platform_from_wire(message.platform, f"task {task}"),
        timeout_ms=int(message.timeout_ms),
        grace_period_ms=int(message.grace_period_ms),
        priority_ms=int(message.priority_ms),
        directories=tuple(message.directories),
    )


def _input_message(item: ActionInput) -> execution_pb2.ActionInput:
    return execution_pb2.ActionInput(
        path=item.path,
        digest=digest_pb2.Digest(hash=item.digest.raw, size_bytes=item.size),
        mode=item.mode,
    )


def _properties(pairs: Iterable[tuple[str, str]]) -> list[digest_pb2.Property]:
    return [digest_pb2.Property(name=name, value=value) for name, value in pairs]


def action_to_wire(action: RemoteAction) -> execution_pb2.Action:
    """The wire form of ``action`` (what a client submits and a worker's lease carries)."""
    message = execution_pb2.Action(
        task=action.task,
        namespace=action.namespace,
        hash_function=HASH_IDS[action.hash_name],  # type: ignore[arg-type]  # enum by number
        key=action.key.raw,
        key_components_json=action.key_components_json,
        env=_properties(action.env),
        cwd=action.cwd,
        inputs=[_input_message(item) for item in action.inputs],
        predecessor_outputs=[
            execution_pb2.PredecessorOutputs(
                task=pred.task, files=[_input_message(f) for f in pred.files]
            )
            for pred in action.predecessor_outputs
        ],
        output_patterns=list(action.output_patterns),
        platform=_properties(action.platform.properties),
        timeout_ms=action.timeout_ms,
        grace_period_ms=action.grace_period_ms,
        priority_ms=action.priority_ms,
        directories=list(action.directories),
    )
    command = action.command
    if isinstance(command, CommandAction):
        message.argv.argv.extend(command.argv)
    else:
        message.shell.shell = command.shell
        message.shell.script = command.script
    return message
