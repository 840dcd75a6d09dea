"""Admission of a remote action: nothing hostile or mis-keyed is ever queued (RX-002).

Spec coverage:
* RX-002 — the key is recomputed from the action's key components (names and digests), its
  env values and input modes, with the client's own framing, and must equal the action's.
* CACHE-007 — each predecessor's output files must hash to the outputs digest its key
  component records, so every file a worker materialises is bound by the key.
* SEC-001 — paths are workspace-absolute and plain (no ``..``, ``.``, empty segments, NUL);
  the working directory is workspace-relative and plain; modes carry no setuid, setgid or
  sticky bit.
* SVC-006 — argv and environment are bounded (:class:`AdmissionLimits`).
Out of scope: whether the input blobs are stored, and answering from the cache (the servicer).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from cache_service.errors import InvalidRequestError
from hazremote.cache.manifest import ManifestError, parse_key_components, workspace_path_problem
from hazremote.domain.digest import Digest
from hazremote.domain.model import CommandAction
from hazremote.domain.refs import TaskId
from hazremote.keys import (
    CHAPTER_REVISION,
    EnvEntry,
    EnvSource,
    InputFile,
    KeyComponents,
    PredecessorStreams,
    frame_key,
    outputs_digest,
)
from hazremote.remote.action import ActionInput, RemoteAction

__all__ = ["AdmissionLimits", "admit"]

#: Setuid, setgid and sticky: never materialised by a worker (SEC-001, CACHE-019).
SPECIAL_MODE_BITS = 0o7000


@dataclass(frozen=True, slots=True, kw_only=True)
class AdmissionLimits:
    """Bounds of one action (Linux' ARG_MAX is 2 MiB for argv and env together)."""

    max_argv_items: int = 4096
    max_argv_bytes: int = 1024 * 1024
    max_env_items: int = 1024
    max_env_bytes: int = 1024 * 1024


def admit(action: RemoteAction, *, limits: AdmissionLimits | None = None) -> KeyComponents:
    """Check ``action`` and return the key components it was verified against.

    Raises:
        InvalidRequestError: the action is hostile, malformed, or its key does not match its
            components (INVALID_ARGUMENT); the message names the task.
    """
    bounds = limits or AdmissionLimits()
    _check_command(action, bounds)
    _check_env(action, bounds)
    _check_paths(action)
    return _verify_key(action)


def _reject(action: RemoteAction, message: str) -> InvalidRequestError:
    return InvalidRequestError(f"task {action.task}: {message}")


def _check_command(action: RemoteAction, bounds: AdmissionLimits) -> None:
    command = action.command
    parts = command.argv if isinstance(command, CommandAction) else (command.shell, command.script)
    if isinstance(command, CommandAction) and not command.argv:
        raise _reject(action, "the argv is empty")
    if len(parts) > bounds.max_argv_items:
        raise _reject(action, f"argv has {len(parts)} items, more than {bounds.max_argv_items}")
    size = sum(len(part.encode("utf-8", "surrogatepass")) for part in parts)
    if size > bounds.max_argv_bytes:
        raise _reject(action, f"argv has {size} bytes, more than {bounds.max_argv_bytes}")
    if any("\x00" in part for part in parts):
        raise _reject(action, "argv contains a NUL byte")


def _check_env(action: RemoteAction, bounds: AdmissionLimits) -> None:
    if len(action.env) > bounds.max_env_items:
        raise _reject(
            action, f"environment has {len(action.env)} variables, more than {bounds.max_env_items}"
        )
    size = sum(
        len(n.encode("utf-8", "surrogatepass")) + len(v.encode("utf-8", "surrogatepass"))
        for n, v in action.env
    )
    if size > bounds.max_env_bytes:
        raise _reject(action, f"environment has {size} bytes, more than {bounds.max_env_bytes}")
    names: set[str] = set()
    for name, value in action.env:
        if not name or "=" in name or "\x00" in name or "\x00" in value:
            raise _reject(action, f"invalid environment variable {name!r}")
        if name in names:
            raise _reject(action, f"environment variable {name!r} is given twice")
        names.add(name)


def _check_paths(action: RemoteAction) -> None:
    if action.cwd:
        problem = workspace_path_problem("/" + action.cwd)
        if action.cwd.startswith("/") or problem is not None:
            why = "is absolute" if action.cwd.startswith("/") else problem
            raise _reject(action, f"working directory {action.cwd!r} {why}")
    for kind, files in (
        ("input", action.inputs),
        *((f"output of {p.task}", p.files) for p in action.predecessor_outputs),
    ):
        for item in files:
            problem = workspace_path_problem(item.path)
            if problem is not None:
                raise _reject(action, f"{kind} path {item.path!r} {problem}")
            if item.mode & SPECIAL_MODE_BITS or not 0 <= item.mode <= 0o7777:
                raise _reject(
                    action,
                    f"{kind} {item.path!r} has mode {item.mode:#o}: setuid, setgid and sticky "
                    "bits are refused",
                )
            if item.size < 0:
                raise _reject(action, f"{kind} {item.path!r} has a negative size")
    for pattern in action.output_patterns:
        problem = workspace_path_problem(pattern)
        if problem is not None:
            raise _reject(action, f"output pattern {pattern!r} {problem}")
    for directory in action.directories:
        problem = workspace_path_problem(directory)
        if problem is not None:
            raise _reject(action, f"directory {directory!r} {problem}")


def _verify_key(action: RemoteAction) -> KeyComponents:
    try:
        recorded = parse_key_components(
            action.key_components_json, chapter_revision=CHAPTER_REVISION
        )
    except ManifestError as exc:
        raise _reject(action, f"malformed key components: {exc}") from None
    if recorded.action != action.command:
        raise _reject(action, "the command differs from the key components' action")
    if [(i.path, i.hash) for i in recorded.inputs] != [(i.path, i.digest) for i in action.inputs]:
        raise _reject(action, "the input files differ from the key components' inputs")
    if recorded.cwd != action.cwd:
        raise _reject(action, "the working directory differs from the key components' cwd")
    if recorded.outputs != action.output_patterns:
        raise _reject(action, "the output patterns differ from the key components' outputs")
    if len(recorded.predecessors) != len(action.predecessor_outputs):
        raise _reject(action, "the predecessor outputs differ from the key components")
    predecessors: list[PredecessorStreams] = []
    for record, given in zip(recorded.predecessors, action.predecessor_outputs, strict=True):
        digest = outputs_digest(_framed(given.files), action.hash_name)
        if record.task != given.task or record.outputs != digest:
            raise _reject(
                action, f"the output files of {given.task} do not match their key component"
            )
        project, task = record.task.split(":", 1)
        predecessors.append(
            PredecessorStreams(
                task=TaskId(project=project, task=task),
                stdout=record.stdout,
                stderr=record.stderr,
                outputs=digest,
            )
        )
    values = dict(action.env)
    env: list[EnvEntry] = []
    for entry in recorded.env:
        if entry.source is EnvSource.UNSET:
            if entry.name in values:
                raise _reject(action, f"the key has {entry.name} unset but the action sets it")
            env.append(EnvEntry(name=entry.name, source=entry.source, value=None))
        elif entry.name not in values:
            raise _reject(action, f"the key hashes {entry.name} but the action does not set it")
        else:
            env.append(EnvEntry(name=entry.name, source=entry.source, value=values[entry.name]))
    components = KeyComponents(
        action=action.command,
        inputs=tuple(
            InputFile(path=i.path, executable=i.executable, digest=i.digest, size=i.size)
            for i in action.inputs
        ),
        predecessors=tuple(predecessors),
        env=tuple(env),
        cwd=action.cwd,
        outputs=action.output_patterns,
    )
    computed = frame_key(components, action.hash_name)
    if computed != action.key:
        raise _reject(
            action,
            f"the key {action.key.hex} does not match its components (they hash to {computed.hex})",
        )
    return components


def _framed(files: Iterable[ActionInput]) -> list[tuple[str, bool, Digest]]:
    return [(f.path, f.executable, f.digest) for f in files]
