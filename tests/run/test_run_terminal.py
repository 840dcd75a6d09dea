"""``haz run`` on a real terminal (a pseudo-terminal): live status area and colours.

Spec coverage: EXEC-040 — on a terminal a live status area and colours on stderr; `NO_COLOR`
disables colour; task output stays on stdout, progress on stderr, whether or not stderr is a
terminal.
"""

from __future__ import annotations

import os
import pty
import subprocess
from pathlib import Path

from tests.run.conftest import HAZ, WorkspaceMaker, py


def run_on_pty(root: Path, env: dict[str, str]) -> tuple[int, bytes, bytes]:
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            [HAZ, "run", "t"],
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=slave,
            env={**os.environ, "TERM": "xterm-256color", **env},
        )
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        stdout = proc.stdout.read() if proc.stdout else b""
        return proc.wait(timeout=60), stdout, b"".join(chunks)
    finally:
        os.close(master)


def workspace(make_workspace: WorkspaceMaker) -> Path:
    return make_workspace(
        {
            ".haz/workspace.yml": "",
            "haz.yml": f"tasks:\n  t:\n    command: {py('print(42)')}\n    cache: false\n",
        }
    )


def test_terminal_gets_colour_and_stdout_stays_clean(make_workspace: WorkspaceMaker) -> None:
    root = workspace(make_workspace)
    code, stdout, terminal = run_on_pty(root, {})
    assert code == 0
    assert stdout == b"[root:t] 42\n"
    assert b"\x1b[" in terminal
    assert b"Tasks: 1 succeeded" in terminal


def test_no_color_disables_colour_on_a_terminal(make_workspace: WorkspaceMaker) -> None:
    root = workspace(make_workspace)
    code, stdout, terminal = run_on_pty(root, {"NO_COLOR": "1"})
    assert code == 0
    assert stdout == b"[root:t] 42\n"
    assert b"\x1b[3" not in terminal  # no SGR colour codes (cursor movement is fine)
    assert b"Tasks: 1 succeeded" in terminal
