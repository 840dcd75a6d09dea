"""RX-002: one conversion of an action to and from the wire, for client, service and worker."""

from __future__ import annotations

from pathlib import Path

import pytest

from hazremote.domain.digest import digest_bytes
from hazremote.domain.model import CommandAction, HashName, ShellAction
from hazremote.remote.action import ActionInput, Platform, PredecessorOutputs, RemoteAction
from hazremote.remote.action_wire import ActionWireError, action_from_wire, action_to_wire
from hazremote.remote.execution import existing_output_parents
from hazremote.wire.haz.remote.v1 import digest_pb2

H = HashName.BLAKE3


def _action(**changes: object) -> RemoteAction:
    blob = ActionInput(path="src/a.c", digest=digest_bytes(H, b"a"), size=1, mode=0o644)
    fields: dict[str, object] = {
        "task": "app:build",
        "namespace": "main",
        "hash_name": H,
        "key": digest_bytes(H, b"key"),
        "key_components_json": b'{"action": {}}',
        "command": CommandAction(argv=("make", "all")),
        "env": (("CC", "cc"),),
        "cwd": "app",
        "inputs": (blob,),
        "predecessor_outputs": (PredecessorOutputs(task="lib:build", files=(blob,)),),
        "output_patterns": ("app/dist/**",),
        "platform": Platform.of({"pool": "large", "os": "linux"}),
        "timeout_ms": 60_000,
        "grace_period_ms": 5_000,
        "priority_ms": 1_200,
        "directories": ("/app/src",),
    }
    fields.update(changes)
    return RemoteAction(**fields)  # type: ignore[arg-type]  # built from a checked dict


@pytest.mark.parametrize(
    "command", [CommandAction(argv=("make",)), ShellAction(shell="sh", script="make && ls")]
)
def test_an_action_survives_the_wire(command: CommandAction | ShellAction) -> None:
    action = _action(command=command)
    assert action_from_wire(action_to_wire(action)) == action


def test_malformed_wire_actions_are_refused_naming_the_task() -> None:
    message = action_to_wire(_action())
    message.inputs[0].digest.hash = b"short"
    with pytest.raises(ActionWireError, match=r"task app:build: input 'src/a.c' has a malformed"):
        action_from_wire(message)
    message = action_to_wire(_action())
    message.ClearField("argv")
    with pytest.raises(ActionWireError, match="task app:build: the action has no command"):
        action_from_wire(message)
    message = action_to_wire(_action())
    message.platform.append(digest_pb2.Property(name="pool", value="small"))
    with pytest.raises(ActionWireError, match="platform property 'pool' is given twice"):
        action_from_wire(message)
    message = action_to_wire(_action())
    message.hash_function = 7  # type: ignore[assignment]  # an id no hash function has
    with pytest.raises(ActionWireError, match="unknown hash function 7"):
        action_from_wire(message)


def test_existing_output_parents_are_the_directories_a_local_run_finds(tmp_path: Path) -> None:
    """RX-008: the parents of the outputs' literal prefixes that exist in the workspace."""
    (tmp_path / "a" / "b").mkdir(parents=True)
    patterns = ("/a/b/c.py", "/a/b/dist/**", "/x/y.o", "/top.txt", "/a/*.o")
    assert existing_output_parents(tmp_path, patterns) == ("/a/b",)
