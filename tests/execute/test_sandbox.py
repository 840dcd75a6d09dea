"""The sandbox (RX-004, EXEC-008, CACHE-023, SEC-001): fresh root, same results as ``haz run``.

Spec coverage: RX-004 (materialise, run, collect, remove), EXEC-008 (spawned as haz run does),
CACHE-023 (byte-identical outputs and streams), SEC-001 (hostile actions refused first).
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from hazremote.cache.codec import BlobCodec
from hazremote.cache.collect import collect
from hazremote.domain.digest import Digest, digest_bytes
from hazremote.domain.model import HashName
from hazremote.domain.patterns import parse_pattern
from hazremote.execute.observers import StreamFiles
from hazremote.execute.sandbox import (
    Sandbox,
    SandboxAction,
    SandboxInput,
    SandboxRefused,
    SandboxResult,
    WorkspaceInputs,
)
from hazremote.execute.spawn import SpawnRequest, SubprocessSpawner
from tests.execute.conftest import SYSTEM_PATH, Cancel

H = HashName.SHA256
PY = sys.executable
ENV = {"PATH": SYSTEM_PATH, "GREETING": "hi"}

BUILD = (
    "import os, sys\n"
    "src = open('src/a.txt').read()\n"
    "os.makedirs('out/sub', exist_ok=True)\n"
    "open('out/a.up', 'w').write(src.upper())\n"
    "open('out/sub/env', 'w').write(os.environ['GREETING'] + str(sorted(os.environ)))\n"
    "os.chmod('out/a.up', 0o755)\n"
    "print('built', len(src)); sys.stderr.write('warn\\n')\n"
)


class Files:
    """An InputSource over a dict of path → bytes (what an input cache would hold)."""

    def __init__(self, root: Path, files: Mapping[str, bytes]) -> None:
        self.by_digest: dict[Digest, Path] = {}
        root.mkdir(parents=True, exist_ok=True)
        for data in files.values():
            digest = digest_bytes(H, data)
            path = root / digest.hex
            path.write_bytes(data)
            os.chmod(path, 0o444)
            self.by_digest[digest] = path

    def locate(self, file: SandboxInput) -> Path | None:
        return self.by_digest.get(file.digest)


def inputs_of(files: Mapping[str, bytes], mode: int = 0o644) -> tuple[SandboxInput, ...]:
    return tuple(
        SandboxInput(path=p, digest=digest_bytes(H, d), size=len(d), mode=mode)
        for p, d in files.items()
    )


def run_in_sandbox(
    tmp: Path, action: SandboxAction, source: object
) -> tuple[SandboxResult, bytes, bytes, list[bytes]]:
    blobs = tmp / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    live: list[bytes] = []
    sandbox = Sandbox(
        base=tmp / "sandboxes",
        inputs=source,  # type: ignore[arg-type]
        spawner=SubprocessSpawner(),
        codec=BlobCodec(hash_name=H, level=3),
    )
    result = asyncio.run(
        sandbox.run(
            action,
            streams=StreamFiles(stdout=tmp / "stdout", stderr=tmp / "stderr"),
            blobs_dir=blobs,
            on_stdout=live.append,
            on_stderr=lambda _: None,
            cancel=Cancel(),
        )
    )
    out, err = (tmp / "stdout", tmp / "stderr")
    return result, read_or_empty(out), read_or_empty(err), live


def read_or_empty(path: Path) -> bytes:
    return path.read_bytes() if path.exists() else b""


def action(**kw: object) -> SandboxAction:
    fields: dict[str, object] = {
        "argv": (PY, "-c", BUILD),
        "env": ENV,
        "cwd": "pkg",
        "inputs": inputs_of({"pkg/src/a.txt": b"hello\n"}),
        "outputs": ("pkg/out/**",),
        "grace_period_s": 0.5,
    }
    fields.update(kw)
    return SandboxAction(**fields)  # type: ignore[arg-type]


def test_a_task_in_the_sandbox_gives_the_outputs_and_streams_of_a_plain_local_run(
    tmp_path: Path,
) -> None:
    """CACHE-023/RX-008: byte-identical outputs (records) and streams to ``haz run``'s."""
    files = {"pkg/src/a.txt": b"hello\n"}
    result, out, err, live = run_in_sandbox(tmp_path / "sb", action(), Files(tmp_path / "c", files))
    assert result.problem is None
    assert result.collected is not None
    # The same task, run in a workspace by the spawner exactly as the local executor does.
    ws = tmp_path / "ws"
    (ws / "pkg" / "src").mkdir(parents=True)
    (ws / "pkg" / "src" / "a.txt").write_bytes(b"hello\n")
    plain = asyncio.run(
        SubprocessSpawner().run(
            SpawnRequest(
                argv=(PY, "-c", BUILD),
                cwd=ws / "pkg",
                env=ENV,
                stdout_spool=tmp_path / "p-out",
                stderr_spool=tmp_path / "p-err",
                hash_name=H,
            ),
            on_stdout=lambda _: None,
            on_stderr=lambda _: None,
            cancel=Cancel(),
        )
    )
    (tmp_path / "p-blobs").mkdir()
    expected = collect(
        ws,
        [parse_pattern("pkg/out/**", project_dir="")],
        blobs_dir=tmp_path / "p-blobs",
        codec=BlobCodec(hash_name=H, level=3),
        fsync=False,
    )
    assert result.collected.outputs == expected.outputs
    assert [r.path for r in expected.outputs] == ["/pkg/out/a.up", "/pkg/out/sub/env"]
    assert expected.outputs[0].mode == 0o755
    assert out == (tmp_path / "p-out").read_bytes() == b"built 6\n"
    assert err == (tmp_path / "p-err").read_bytes() == b"warn\n"
    assert b"".join(live) == out
    assert result.process is not None
    assert result.process.stdout_digest == plain.stdout_digest
    for digest, stored in result.collected.blobs.items():
        assert stored.path.read_bytes() == expected.blobs[digest].path.read_bytes()
    assert os.listdir(tmp_path / "sb" / "sandboxes") == []  # removed afterwards


def test_an_undeclared_input_is_not_visible_and_the_task_fails_naming_it(tmp_path: Path) -> None:
    """RX-004: only declared inputs exist in the sandbox."""
    ws = tmp_path / "ws"
    (ws / "pkg" / "src").mkdir(parents=True)
    (ws / "pkg" / "src" / "a.txt").write_bytes(b"hello\n")
    (ws / "pkg" / "src" / "secret.txt").write_bytes(b"undeclared\n")
    script = "print(open('src/secret.txt').read())"
    result, _, err, _ = run_in_sandbox(
        tmp_path / "sb", action(argv=(PY, "-c", script)), WorkspaceInputs(ws)
    )
    assert result.process is not None
    assert result.process.exit_code == 1
    assert result.collected is None
    assert b"No such file or directory: 'src/secret.txt'" in err


def test_a_task_writing_to_its_inputs_changes_nothing_the_next_action_sees(
    tmp_path: Path,
) -> None:
    """SEC-001 isolation: inputs are copies, so neither the source (input cache) nor another
    sandbox changes, whatever the task's uid (root ignores file modes)."""
    files = {"pkg/src/a.txt": b"hello\n"}
    source = Files(tmp_path / "c", files)
    vandal = (
        "import os\n"
        "os.chmod('src/a.txt', 0o644)\n"
        "open('src/a.txt', 'r+b').write(b'EVIL!!')\n"
        "print(open('src/a.txt').read())\n"
    )
    first, out, _, _ = run_in_sandbox(tmp_path / "one", action(argv=(PY, "-c", vandal)), source)
    assert first.process is not None
    assert first.process.exit_code == 0
    assert out == b"EVIL!!\n"
    assert (tmp_path / "c" / digest_bytes(H, b"hello\n").hex).read_bytes() == b"hello\n"
    _second, out, _, _ = run_in_sandbox(
        tmp_path / "two", action(argv=(PY, "-c", "print(open('src/a.txt').read())")), source
    )
    assert out == b"hello\n\n"


def test_leftover_processes_and_files_are_gone_after_the_action(tmp_path: Path) -> None:
    """RX-004/EXEC-008: a backgrounded descendant is killed; the sandbox is removed even
    where the task took its permissions away."""
    script = (
        "import os, subprocess\n"
        "p = subprocess.Popen(['sleep', '60'], start_new_session=True)\n"
        "open(os.environ['PIDFILE'], 'w').write(str(p.pid))\n"
        "os.makedirs('locked/deep'); open('locked/deep/f', 'w').write('x')\n"
        "os.chmod('locked/deep', 0); os.chmod('locked', 0)\n"
    )
    pidfile = tmp_path / "pid"
    env = {**ENV, "PIDFILE": str(pidfile)}
    result, _, _, _ = run_in_sandbox(
        tmp_path / "sb",
        action(argv=(PY, "-c", script), env=env, inputs=()),
        Files(tmp_path / "c", {}),
    )
    assert result.process is not None
    assert result.process.exit_code == 0
    assert os.listdir(tmp_path / "sb" / "sandboxes") == []
    pid = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_an_input_missing_from_the_source_fails_before_the_process_starts(
    tmp_path: Path,
) -> None:
    result, _, _, _ = run_in_sandbox(tmp_path / "sb", action(), Files(tmp_path / "c", {}))
    assert result.process is None
    assert result.problem is not None
    assert "input 'pkg/src/a.txt' is missing" in result.problem
    assert os.listdir(tmp_path / "sb" / "sandboxes") == []


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"inputs": inputs_of({"/etc/x": b"x"})}, "input path '/etc/x' is absolute"),
        ({"inputs": inputs_of({"../escape": b"x"})}, "input path '../escape' has a '..' segment"),
        ({"inputs": inputs_of({"a/../../x": b"x"})}, "has a '..' segment"),
        ({"inputs": inputs_of({".haz/x": b"x"})}, "inside the workspace's .haz directory"),
        ({"inputs": inputs_of({"a": b"x", "a/b": b"y"})}, "lies under the input file 'a'"),
        ({"inputs": inputs_of({"tool": b"x"}, mode=0o4755)}, "setuid, setgid and sticky"),
        ({"inputs": inputs_of({"tool": b"x"}, mode=0o2755)}, "setuid, setgid and sticky"),
        ({"cwd": "/tmp"}, "working directory '/tmp' is absolute"),
        ({"cwd": "../.."}, "working directory '../..' has a '..' segment"),
        ({"outputs": ("/etc/*",)}, "output pattern '/etc/*' is absolute"),
        ({"outputs": ("../out/**",)}, "'../out/**' has a '..' segment"),
    ],
)
def test_hostile_actions_are_refused_before_anything_is_written(
    tmp_path: Path, changes: dict[str, object], message: str
) -> None:
    """SEC-001: each refusal names its path; no directory or file appears anywhere."""
    source = Files(tmp_path / "c", {"x": b"x", "y": b"y"})
    (tmp_path / "sb" / "blobs").mkdir(parents=True)
    before = _tree(tmp_path)
    with pytest.raises(SandboxRefused, match=re.escape(message)):
        run_in_sandbox(tmp_path / "sb", action(**changes), source)
    assert _tree(tmp_path) == before


def test_a_workspace_input_reached_through_a_symlink_is_refused(tmp_path: Path) -> None:
    """SEC-001: a symlinked directory or file in an input's path is no input (``haz run
    --sandbox``); nothing outside the sandbox is read or written."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "a.txt").write_bytes(b"hello\n")
    ws = tmp_path / "ws"
    (ws / "pkg").mkdir(parents=True)
    (ws / "pkg" / "src").symlink_to(outside)
    before = _tree(outside)
    result, _, _, _ = run_in_sandbox(tmp_path / "sb", action(), WorkspaceInputs(ws))
    assert result.process is None
    assert result.problem is not None
    assert "input 'pkg/src/a.txt' is missing" in result.problem
    assert _tree(outside) == before


def test_an_output_that_is_a_symlink_out_of_the_sandbox_is_refused(tmp_path: Path) -> None:
    """SEC-001: a task cannot smuggle a host file into its outputs through a symlink."""
    secret = tmp_path / "host-secret"
    secret.write_bytes(b"password")
    script = f"import os; os.makedirs('out'); os.symlink({str(secret)!r}, 'out/leak')"
    result, _, _, _ = run_in_sandbox(
        tmp_path / "sb", action(argv=(PY, "-c", script), inputs=()), Files(tmp_path / "c", {})
    )
    assert result.collected is None
    assert result.problem == "output 'pkg/out/leak' resolves outside the sandbox"
    assert os.listdir(tmp_path / "sb" / "blobs") == []


def test_an_input_that_is_also_a_predecessor_output_is_one_file(tmp_path: Path) -> None:
    """RX-004: a path listed twice with the same content (a task's default inputs include its
    predecessor's output) is materialised once; with other content it is refused first."""
    same = inputs_of({"pkg/src/a.txt": b"hello\n"})
    source = Files(tmp_path / "c", {"a": b"hello\n", "b": b"other\n"})
    result, out, _, _ = run_in_sandbox(tmp_path / "sb", action(inputs=same + same), source)
    assert result.process is not None
    assert result.process.succeeded
    assert out == b"built 6\n"
    other = inputs_of({"pkg/src/a.txt": b"other\n"})
    message = "'pkg/src/a.txt' is listed twice with other content"
    with pytest.raises(SandboxRefused, match=re.escape(message)):
        run_in_sandbox(tmp_path / "sb2", action(inputs=same + other), source)


def test_directories_the_client_has_exist_before_the_task_runs(tmp_path: Path) -> None:
    """RX-008: a code generator writing into a source directory that exists in the client's
    workspace finds it on the worker; a directory not listed is left to the task."""
    write = (
        "import os; open('../lib/src/gen.py', 'w').write('X = 1\\n'); "
        "os.mkdir('out'); open('out/a', 'w').write('a')"
    )
    result, _, err, _ = run_in_sandbox(
        tmp_path,
        action(
            argv=(PY, "-c", write),
            outputs=("lib/src/gen.py", "pkg/out/**"),
            directories=("lib/src",),
        ),
        Files(tmp_path / "c", {"a": b"hello\n"}),
    )
    assert result.process is not None
    assert result.process.succeeded, err
    assert result.collected is not None
    assert [o.path for o in result.collected.outputs] == ["/lib/src/gen.py", "/pkg/out/a"]


def test_a_listed_directory_escaping_the_sandbox_is_refused(tmp_path: Path) -> None:
    """SEC-001: directories are checked like every other path, before anything is written."""
    with pytest.raises(SandboxRefused, match=re.escape("directory '../x' has a '..' segment")):
        run_in_sandbox(tmp_path, action(directories=("../x",)), Files(tmp_path / "c", {}))
