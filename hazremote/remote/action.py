"""The remote action: what a client submits for remote execution, as plain values.

The client builds it, the service admits and queues it, the worker runs it; each converts it
from and to the wire (``haz.remote.v1.Action``) at its own edge.

Spec coverage:
* RX-002 — argv or shell, effective env, cwd, input files, output patterns, platform,
  timeout, the key and its components.
* CACHE-007 — the predecessors' output files, bound to the key by their outputs digest.
* EXEC-009 — ``timeout_ms``; RX-007 — ``grace_period_ms``.
Out of scope: checking an action (``cache_service.scheduling.admission``) and running it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from hazremote.domain.digest import Digest
from hazremote.domain.model import Action, HashName

__all__ = ["ActionInput", "Platform", "PredecessorOutputs", "RemoteAction"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ActionInput:
    """One file the worker materialises: workspace-absolute ``path``, content ``digest`` and
    ``size``, permission bits ``mode`` (any ``x`` bit: executable in the key)."""

    path: str
    digest: Digest
    size: int
    mode: int

    @property
    def executable(self) -> bool:
        return bool(self.mode & 0o111)


@dataclass(frozen=True, slots=True, kw_only=True)
class PredecessorOutputs:
    """A hard predecessor's output files (``task`` is ``project:task``)."""

    task: str
    files: tuple[ActionInput, ...]


@dataclass(frozen=True, slots=True)
class Platform:
    """Platform properties (RX-003): name → value, held sorted so equal sets compare and hash
    equal. A worker can take an action whose properties are a subset of its own."""

    properties: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, properties: Mapping[str, str]) -> Platform:
        return cls(tuple(sorted(properties.items())))

    def satisfies(self, required: Platform) -> bool:
        """True when every property of ``required`` is one of these (same name and value)."""
        mine = dict(self.properties)
        return all(mine.get(name) == value for name, value in required.properties)

    def __str__(self) -> str:
        """``os=linux,pool=large``; ``""`` for no properties (the default pool)."""
        return ",".join(f"{name}={value}" for name, value in self.properties)


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoteAction:
    """An action submitted for remote execution (RX-002).

    Attributes:
        task: ``project:task``, for messages only (not in the key).
        namespace: The cache namespace the result is published in.
        hash_name: The workspace hash function (CACHE-002).
        key: The cache key the worker publishes the manifest under.
        key_components_json: The CACHE-011 ``key_components`` object, UTF-8 JSON.
        command: What to run (CACHE-005).
        env: The effective environment (EXEC-008), as (name, value) pairs.
        cwd: Working directory relative to the workspace root (``""``: the root).
        inputs: The task's input files, sorted by path.
        predecessor_outputs: Each hard predecessor's output files, in key order.
        output_patterns: Workspace-absolute output patterns, sorted.
        platform: Properties a worker must have.
        timeout_ms: EXEC-009 timeout, 0 for none.
        grace_period_ms: RX-007 SIGTERM → SIGKILL delay.
        priority_ms: The estimated remaining critical path from this task (higher first).
        directories: Workspace-absolute parents of the outputs that exist in the client's
            workspace before the task runs (the worker creates them, RX-008).
    """

    task: str
    namespace: str
    hash_name: HashName
    key: Digest
    key_components_json: bytes
    command: Action
    env: tuple[tuple[str, str], ...] = ()
    cwd: str = ""
    inputs: tuple[ActionInput, ...] = ()
    predecessor_outputs: tuple[PredecessorOutputs, ...] = ()
    output_patterns: tuple[str, ...] = ()
    platform: Platform = Platform()
    timeout_ms: int = 0
    grace_period_ms: int = 0
    priority_ms: int = 0
    directories: tuple[str, ...] = ()
