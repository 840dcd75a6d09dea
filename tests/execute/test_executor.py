"""The local executor: an :class:`ActionRequest` runs as a local process (EXEC-008/009/017).

Spec coverage: EXEC-008 (argv, complete env, cwd), EXEC-009 (facts, not classified),
EXEC-017 (streams spooled completely and delivered live).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from hazremote.domain.digest import Digest
from hazremote.domain.model import CommandAction, HashName
from hazremote.domain.refs import TaskId
from hazremote.execute.executor import ActionRequest, ExecutionOutcome, LocalExecutor
from hazremote.execute.observers import StreamFiles
from hazremote.execute.spawn import SubprocessSpawner
from hazremote.keys.components import KeyComponents
from tests.execute.conftest import SYSTEM_PATH, Cancel

SCRIPT = "import os, sys; print(os.getcwd(), os.environ['X']); sys.stderr.write('e'); sys.exit(3)"


def request(tmp: Path, argv: tuple[str, ...]) -> ActionRequest:
    return ActionRequest(
        task=TaskId("app", "build"),
        key=Digest(bytes(32)),
        components=KeyComponents(action=CommandAction(argv=argv)),
        argv=argv,
        env={"PATH": SYSTEM_PATH, "X": "42"},
        workspace_root=tmp,
        cwd=tmp,
        outputs=(),
        streams=StreamFiles(stdout=tmp / "out", stderr=tmp / "err"),
        timeout_s=None,
        grace_period_s=0.2,
        hash_name=HashName.SHA256,
    )


def run(tmp: Path, argv: tuple[str, ...]) -> tuple[ExecutionOutcome, list[bytes], list[bytes]]:
    out: list[bytes] = []
    err: list[bytes] = []

    async def main() -> ExecutionOutcome:
        return await LocalExecutor(SubprocessSpawner()).run(
            request(tmp, argv), on_stdout=out.append, on_stderr=err.append, cancel=Cancel()
        )

    return asyncio.run(main()), out, err


def test_the_action_runs_with_its_argv_env_and_cwd(tmp_path: Path) -> None:
    """EXEC-008/017: the process sees the request's env and cwd; both streams are spooled
    and delivered live; the exit code is a fact (classification is the lifecycle's)."""
    outcome, out, err = run(tmp_path, (sys.executable, "-c", SCRIPT))
    assert outcome.process.exit_code == 3
    assert outcome.touched_workspace
    assert outcome.process.stdout_digest is not None
    assert (tmp_path / "out").read_bytes() == b"".join(out) == f"{tmp_path} 42\n".encode()
    assert (tmp_path / "err").read_bytes() == b"".join(err) == b"e"


def test_a_command_that_cannot_start_touches_nothing(tmp_path: Path) -> None:
    """EXEC-009: a spawn error is a value; no process ran, so no output can have changed."""
    outcome, _, _ = run(tmp_path, ("no-such-command-haz",))
    assert outcome.process.spawn_error is not None
    assert not outcome.touched_workspace
