"""Fixtures for the execute tests: real processes run through the real spawner."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hazremote.domain.model import HashName
from hazremote.execute.observers import Stream
from hazremote.execute.spawn import ProcessOutcome, SpawnRequest, SubprocessSpawner

PY = sys.executable
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclass
class Cancel:
    """A minimal CancelSignal (the scheduler's Cancellation has the same two events)."""

    requested: asyncio.Event = field(default_factory=asyncio.Event)
    kill_now: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class Result:
    outcome: ProcessOutcome
    stdout_chunks: list[bytes]
    stderr_chunks: list[bytes]
    stdout_spool: bytes
    stderr_spool: bytes

    @property
    def stdout(self) -> bytes:
        return b"".join(self.stdout_chunks)

    @property
    def stderr(self) -> bytes:
        return b"".join(self.stderr_chunks)


@dataclass
class Runner:
    """Builds a SpawnRequest in ``tmp`` and runs it to completion."""

    tmp: Path
    spawner: SubprocessSpawner = field(default_factory=SubprocessSpawner)

    def request(
        self,
        argv: list[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        timeout_s: float | None = None,
        grace_period_s: float = 0.2,
        hash_name: HashName | None = None,
    ) -> SpawnRequest:
        return SpawnRequest(
            argv=tuple(argv),
            cwd=cwd if cwd is not None else self.tmp,
            env={"PATH": SYSTEM_PATH} if env is None else env,
            stdout_spool=self.tmp / "stdout.spool",
            stderr_spool=self.tmp / "stderr.spool",
            timeout_s=timeout_s,
            grace_period_s=grace_period_s,
            hash_name=hash_name,
        )

    async def arun(
        self,
        request: SpawnRequest,
        *,
        cancel: Cancel | None = None,
        on_stdout: Callable[[bytes], None] | None = None,
    ) -> Result:
        out: list[bytes] = []
        err: list[bytes] = []
        outcome = await self.spawner.run(
            request,
            on_stdout=on_stdout if on_stdout is not None else out.append,
            on_stderr=err.append,
            cancel=cancel if cancel is not None else Cancel(),
        )
        return Result(
            outcome=outcome,
            stdout_chunks=out,
            stderr_chunks=err,
            stdout_spool=request.stdout_spool.read_bytes(),
            stderr_spool=request.stderr_spool.read_bytes(),
        )

    def run(self, argv: list[str], **kwargs: object) -> Result:
        return asyncio.run(self.arun(self.request(argv, **kwargs)))  # type: ignore[arg-type]

    def python(self, code: str, **kwargs: object) -> Result:
        return self.run([PY, "-c", code], **kwargs)


@pytest.fixture
def runner(tmp_path: Path) -> Runner:
    return Runner(tmp=tmp_path)


def pid_exists(pid: int) -> bool:
    """True while ``pid`` exists at all, a zombie included (nothing reaped it yet)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def wait_for_file(path: Path, *, timeout_s: float = 10.0) -> str:
    """Poll until ``path`` holds a complete line (a helper process wrote its pids there)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        if path.exists() and (text := path.read_text()).endswith("\n"):
            return text
        await asyncio.sleep(0.02)
    raise AssertionError(f"{path} never appeared")


class Recorder:
    """An OutputSink that remembers every write call."""

    def __init__(self) -> None:
        self.writes: list[tuple[Stream, bytes]] = []

    def write(self, stream: Stream, data: bytes) -> None:
        self.writes.append((stream, data))

    def joined(self, stream: Stream) -> bytes:
        return b"".join(data for s, data in self.writes if s is stream)
