"""The executor port: how the lifecycle runs a miss, wherever the action runs.

Spec coverage:
* EXEC-008 — :class:`ActionRequest`: the complete env, argv and working directory of one task.
* EXEC-009 — :class:`ExecutionOutcome` holds the facts; :func:`~.records.classify` judges them.
* EXEC-012..015 — cancellation and timeouts (grace period) are the executor's to enforce.
* EXEC-017 — both streams are spooled completely to the request's files and delivered live.
* RX-001 — :attr:`ActionRequest.remote`: where the action may run; RX-002 — its platform and
  predecessors' outputs; RX-008 — :attr:`ExecutionOutcome.manifest_document`.
Out of scope: cache lookups and stores (the lifecycle's); the remote executor
(:mod:`hazremote.remote.execution`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from hazremote.cache.manifest import OutputRecord
from hazremote.domain.digest import Digest
from hazremote.domain.model import HashName, RemotePolicy
from hazremote.domain.patterns import PathPattern
from hazremote.domain.refs import TaskId
from hazremote.execute.observers import StreamFiles
from hazremote.execute.spawn import (
    CancelSignal,
    OutputCallback,
    ProcessOutcome,
    ProcessSpawner,
    SpawnRequest,
)
from hazremote.keys.components import KeyComponents

__all__ = ["ActionRequest", "ExecutionOutcome", "Executor", "LimitedExecutor", "LocalExecutor"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ActionRequest:
    """One task's action, with everything an executor needs to run it here or elsewhere.

    Attributes:
        task: The task it belongs to.
        key: Its cache key (a remote executor names the action by it).
        components: What the key was derived from: the input files (path + digest) a remote
            executor makes present, the action, the working directory.
        argv: Program and arguments (EXEC-008).
        env: The complete process environment; nothing else is inherited.
        workspace_root: The workspace's absolute root.
        cwd: Working directory, absolute (the project root).
        outputs: The task's declared output patterns (what a remote executor collects).
        streams: Files receiving the complete stdout / stderr.
        timeout_s: The task's timeout; ``None`` for none.
        grace_period_s: SIGTERM → SIGKILL delay on timeout or cancellation.
        hash_name: The hash function of the stream digests in the outcome.
        remote: RX-001: the run's and the task's policy combined (``never``: local only).
        platform: Platform properties a remote worker needs (RX-003).
        predecessor_outputs: Each hard predecessor's recorded output files (RX-002), for
            those whose manifest this run knows.
    """

    task: TaskId
    key: Digest
    components: KeyComponents
    argv: tuple[str, ...]
    env: Mapping[str, str]
    workspace_root: Path
    cwd: Path
    outputs: tuple[PathPattern, ...]
    streams: StreamFiles
    timeout_s: float | None
    grace_period_s: float
    hash_name: HashName
    remote: RemotePolicy = RemotePolicy.NEVER
    platform: Mapping[str, str] = field(default_factory=dict)
    predecessor_outputs: tuple[tuple[TaskId, tuple[OutputRecord, ...]], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutionOutcome:
    """What running an action did.

    Attributes:
        process: The process facts (exit code, signal, timeout, cancellation, stream
            digests), not yet classified.
        touched_workspace: The action may have written into the workspace (a process
            started), so files under its output patterns may have changed.
        manifest_document: RX-008: a remote success's published manifest, restored like a
            remote cache hit (nothing of the workspace was touched yet).
        worker: The remote worker that ran it, if any.
    """

    process: ProcessOutcome
    touched_workspace: bool
    manifest_document: bytes | None = None
    worker: str | None = None


class Executor(Protocol):
    """Runs one action; every failure of the action is a value in the outcome."""

    async def run(
        self,
        request: ActionRequest,
        *,
        on_stdout: OutputCallback,
        on_stderr: OutputCallback,
        cancel: CancelSignal,
    ) -> ExecutionOutcome:
        """Run ``request`` to its end (or cancellation), streaming its output live."""
        ...


class LocalExecutor:
    """An :class:`Executor` running the action as a local process through a spawner."""

    def __init__(self, spawner: ProcessSpawner) -> None:
        self._spawner = spawner

    async def run(
        self,
        request: ActionRequest,
        *,
        on_stdout: OutputCallback,
        on_stderr: OutputCallback,
        cancel: CancelSignal,
    ) -> ExecutionOutcome:
        outcome = await self._spawner.run(
            SpawnRequest(
                argv=request.argv,
                cwd=request.cwd,
                env=request.env,
                stdout_spool=request.streams.stdout,
                stderr_spool=request.streams.stderr,
                timeout_s=request.timeout_s,
                grace_period_s=request.grace_period_s,
                hash_name=request.hash_name,
            ),
            on_stdout=on_stdout,
            on_stderr=on_stderr,
            cancel=cancel,
        )
        return ExecutionOutcome(process=outcome, touched_workspace=outcome.pid is not None)


class LimitedExecutor:
    """An :class:`Executor` running at most ``limit`` actions of ``inner`` at a time.

    With remote execution the scheduler admits ``-j`` plus ``--remote-jobs`` tasks; this keeps
    the local processes (and ``auto`` fallbacks) at ``-j``.
    """

    def __init__(self, inner: Executor, *, limit: int) -> None:
        self._inner = inner
        self._slots = asyncio.Semaphore(limit)

    async def run(
        self,
        request: ActionRequest,
        *,
        on_stdout: OutputCallback,
        on_stderr: OutputCallback,
        cancel: CancelSignal,
    ) -> ExecutionOutcome:
        async with self._slots:
            return await self._inner.run(
                request, on_stdout=on_stdout, on_stderr=on_stderr, cancel=cancel
            )
