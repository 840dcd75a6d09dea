"""The resolved components of a cache key (CACHE-004..009), as plain values.

This module only defines the values; :mod:`hazremote.keys.framing` feeds them to the hasher
and :mod:`hazremote.keys.resolve` produces them from the workspace.

Spec coverage:
* CACHE-005 — action (argv, or shell name + script).
* CACHE-006 — input files: workspace-absolute path, executable bit, content digest (plus a
  size that is not framed).
* CACHE-007 — hard predecessors: task id, stdout and stderr digests, and (chapter revision 1)
  the digest of the files the predecessor produced.
* CACHE-008 — environment: names with an unset marker, or their value; ``pass_through`` is absent.
* CACHE-009 — working directory and output patterns.
* CACHE-011 — :meth:`KeyComponents.to_manifest_json` is the ``key_components`` manifest object,
  which never carries env values (a shared cache must not leak secrets).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from hazremote.domain.digest import Digest
from hazremote.domain.model import Action, CommandAction
from hazremote.domain.refs import TaskId

__all__ = ["EnvEntry", "EnvSource", "InputFile", "KeyComponents", "PredecessorStreams"]


@dataclass(frozen=True, slots=True, kw_only=True)
class InputFile:
    """One input file of a key: what the key frames (path, executable bit, digest) and its
    ``size`` in bytes, which is never framed (CACHE-006) but names the blob a remote action
    needs (digest and size)."""

    path: str  # workspace-absolute, leading "/"
    executable: bool
    digest: Digest
    size: int  # as stat'ed when the digest was taken or looked up; not part of the key


@dataclass(frozen=True, slots=True, kw_only=True)
class PredecessorStreams:
    """What a hard predecessor's successful run contributes to a dependant's key (CACHE-007).

    The name predates chapter revision 1, which added ``outputs``: it is kept because every
    layer (scheduler, lifecycle, dry run) passes these values around under it.

    Attributes:
        task: The predecessor.
        stdout: Digest of its stdout bytes.
        stderr: Digest of its stderr bytes.
        outputs: Digest of its output files
            (:func:`hazremote.keys.framing.outputs_digest`).
    """

    task: TaskId
    stdout: Digest
    stderr: Digest
    outputs: Digest


class EnvSource(enum.Enum):
    """How a hashed variable got its value; shown in manifests as ``set``/``unset``/``override``."""

    SET = "set"  # from_host, present on the host
    UNSET = "unset"  # from_host, absent on the host
    OVERRIDE = "override"  # set by haz


@dataclass(frozen=True, slots=True, kw_only=True)
class EnvEntry:
    name: str
    source: EnvSource
    value: str | None  # None exactly when source is UNSET


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyComponents:
    """Everything a key is derived from, already resolved and sorted.

    Producers of this value (input resolution) sort and de-duplicate; :func:`framing` re-checks
    nothing and frames exactly what it is given, in order.
    """

    action: Action
    inputs: tuple[InputFile, ...] = ()
    predecessors: tuple[PredecessorStreams, ...] = ()
    env: tuple[EnvEntry, ...] = ()
    cwd: str = ""
    outputs: tuple[str, ...] = ()

    def action_json(self) -> dict[str, object]:
        if isinstance(self.action, CommandAction):
            return {"command": list(self.action.argv)}
        return {"shell": self.action.shell, "script": self.action.script}

    def to_manifest_json(self) -> dict[str, object]:
        """CACHE-011 ``key_components``: names and digests only, never env values."""
        return {
            "action": self.action_json(),
            "inputs": [[f.path, f.digest.hex] for f in self.inputs],
            "predecessors": [
                [str(p.task), p.stdout.hex, p.stderr.hex, p.outputs.hex] for p in self.predecessors
            ],
            "env": [[e.name, e.source.value] for e in self.env],
            "cwd": self.cwd,
            "outputs": list(self.outputs),
        }
