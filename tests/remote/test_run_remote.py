"""``haz run`` with a remote cache, end to end: the real ``haz`` binary against a gRPC server.

These run against the real server in-process over fault-injecting memory stores
(``tests.remote.conftest.CacheServer``), or the lying server where the server must break the
protocol; the same scenarios against the ``haz-cache-service`` process are in
``test_run_cache_service.py``.

Spec coverage: RC-001 (a second clone restores from the remote and backfills its local
cache), RC-002 (uploads in read-write mode only), RC-003 (unreachable or corrupt remote: the
run succeeds locally with one warning), RC-004, RC-008 (``remote-cache`` in progress and
summary), EXEC-030 (``remote hit`` in ``--dry-run``), SPEC §5 (flags and environment).
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

from tests.remote.conftest import CacheServer
from tests.remote.lyingserver import LyingServer
from tests.run.conftest import HazRunner, WorkspaceMaker, py
from tests.support.faultstore import ALL

BUILD = py(
    "import os, sys, pathlib;"
    "src = pathlib.Path('src/main.txt').read_bytes();"
    "out = pathlib.Path('dist'); out.mkdir(exist_ok=True);"
    "(out / 'app.bin').write_bytes(src.upper() * 50000 + bytes([0xff, 0xfe, 0]));"
    "(out / 'run.sh').write_text('#!/bin/sh\\necho hi\\n'); os.chmod(out / 'run.sh', 0o755);"
    "sys.stdout.buffer.write(b'built \\xff\\xfe invalid utf8\\npartial');"
    "sys.stderr.write('a warning\\n')"
)
USE = py(
    "import sys, pathlib;"
    "data = pathlib.Path('../lib/dist/app.bin').read_bytes();"
    "pathlib.Path('out.txt').write_text(str(len(data)));"
    "print('used', len(data))"
)
# Short enough that a black-holed remote costs a test a few seconds, long enough that a
# loaded CI machine (2 pytest workers, SeaweedFS, services) does not turn hits into misses.
FAST = "connect_s=2,lookup_s=2,transfer_s=10,breaker_failures=2,breaker_cooldown_s=0.5"


def files(*, app_reads_lib: bool = True) -> dict[str, str]:
    """``lib:build`` (outputs, modes, binary streams) and ``app:build`` after it; when
    ``app_reads_lib`` is False, ``app`` depends on ``lib`` only through its streams
    (CACHE-007), so a dry run can know its key without lib's outputs on disk."""
    app_input = "/lib/dist/app.bin" if app_reads_lib else "app.txt"
    app_command = USE if app_reads_lib else py("print('app')")
    return {
        ".haz/workspace.yml": "projects: [lib, app]\n",
        "lib/haz.yml": (
            "tasks:\n"
            "  build:\n"
            f"    command: {BUILD}\n"
            "    inputs: [src/**]\n"
            "    outputs: [dist/**]\n"
        ),
        "lib/src/main.txt": "hello\n",
        "app/app.txt": "app\n",
        "app/haz.yml": (
            "tasks:\n"
            "  build:\n"
            f"    command: {app_command}\n"
            f"    inputs: [{app_input}]\n"
            "    outputs: [out.txt]\n"
            "    deps: [lib:build]\n"
        ),
    }


def remote_env(url: str, **extra: str) -> dict[str, str]:
    return {"HAZ_REMOTE_URL": url, "HAZ_REMOTE_TIMEOUTS": FAST, **extra}


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    found = {}
    for rel in ("lib/dist/app.bin", "lib/dist/run.sh", "app/out.txt"):
        path = root / rel
        found[rel] = (path.read_bytes(), stat.S_IMODE(path.stat().st_mode))
    return found


def warning_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "remote cache grpc://" in line]


def test_second_clone_restores_everything_from_the_remote(
    haz: HazRunner, make_workspace: WorkspaceMaker, server: CacheServer
) -> None:
    """RC-001/RC-008/CACHE-023: a clone at another path with an empty local cache gets only
    remote-cache hits with byte-identical outputs, modes and streams, and is backfilled."""
    first_root = make_workspace(files(), name="clone-a")
    second_root = make_workspace(files(), name="clone-b")
    first = haz(
        "run", "--workspace", "--output", "buffered", cwd=first_root, env=remote_env(server.url)
    )
    assert first.code == 0, first.stderr
    assert first.sources() == {"app:build": "fresh", "lib:build": "fresh"}
    assert len(server.manifests()) == 2  # uploaded before the run ended (RC-002)

    second = haz(
        "run", "--workspace", "--output", "buffered", cwd=second_root, env=remote_env(server.url)
    )
    assert second.code == 0, second.stderr
    assert second.sources() == {"app:build": "remote-cache", "lib:build": "remote-cache"}
    assert second.stdout == first.stdout
    assert b"built \xff\xfe invalid utf8\npartial" in second.stdout
    assert "a warning" in second.stderr
    assert snapshot(second_root) == snapshot(first_root)
    assert "↓ lib:build (remote cache)" in second.stderr
    assert warning_lines(second.stderr) == []

    # RC-001 backfill: the next run of the second clone needs no remote at all.
    third = haz("run", "--workspace", cwd=second_root)
    assert third.sources() == {"app:build": "local-cache", "lib:build": "local-cache"}


def test_flags_override_environment_and_read_only_never_writes(
    haz: HazRunner, make_workspace: WorkspaceMaker, server: CacheServer
) -> None:
    """SPEC §5 / RC-002: --remote-mode read-only beats HAZ_REMOTE_MODE; nothing is written."""
    root = make_workspace(files())
    result = haz(
        "run",
        "--workspace",
        "--remote-mode",
        "read-only",
        cwd=root,
        env=remote_env(server.url, HAZ_REMOTE_MODE="read-write"),
    )
    assert result.code == 0, result.stderr
    assert server.faults.rpcs["BatchGetManifests"] >= 1  # it did read
    assert server.manifests() == {}
    assert server.blobs() == {}
    assert server.faults.rpcs["PutManifest"] == 0


def test_remote_namespace_flag_selects_the_namespace(
    haz: HazRunner, make_workspace: WorkspaceMaker, server: CacheServer
) -> None:
    """SPEC §5: --remote-namespace writes under that namespace; others do not see it."""
    first_root = make_workspace(files(), name="a")
    assert (
        haz(
            "run",
            "--workspace",
            "--remote-namespace",
            "team-x",
            cwd=first_root,
            env=remote_env(server.url),
        ).code
        == 0
    )
    assert {ns for ns, _ in server.manifests()} == {"team-x"}
    other = make_workspace(files(), name="b")
    miss = haz("run", "--workspace", cwd=other, env=remote_env(server.url))
    assert miss.sources() == {"app:build": "fresh", "lib:build": "fresh"}


def test_corrupt_remote_data_runs_locally_with_one_warning(
    haz: HazRunner, make_workspace: WorkspaceMaker, liar: LyingServer
) -> None:
    """RC-003/RC-004: corrupt bytes from the server are a miss: the tasks run, one warning.

    Needs the liar: the real server verifies what it reads and never sends such bytes."""
    server = liar
    first_root = make_workspace(files(), name="a")
    assert haz("run", "--workspace", cwd=first_root, env=remote_env(server.url)).code == 0
    server.state.corrupt_reads = True
    second_root = make_workspace(files(), name="b")
    second = haz("run", "--workspace", cwd=second_root, env=remote_env(server.url))
    assert second.code == 0, second.stderr
    assert second.sources() == {"app:build": "fresh", "lib:build": "fresh"}
    assert len(warning_lines(second.stderr)) == 1
    assert "corrupt data" in second.stderr
    assert snapshot(second_root) == snapshot(first_root)


def _dead_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"grpc://127.0.0.1:{sock.getsockname()[1]}"


def test_unreachable_remote_is_one_warning_and_a_local_run(
    haz: HazRunner, make_workspace: WorkspaceMaker
) -> None:
    """RC-003: no task fails because the remote is unavailable; exactly one warning."""
    root = make_workspace(files())
    result = haz("run", "--workspace", cwd=root, env=remote_env(_dead_url()))
    assert result.code == 0, result.stderr
    assert result.sources() == {"app:build": "fresh", "lib:build": "fresh"}
    assert len(warning_lines(result.stderr)) == 1


def test_black_hole_remote_costs_deadlines_not_the_run(
    haz: HazRunner, make_workspace: WorkspaceMaker, server: CacheServer
) -> None:
    """RC-003: a server that never answers: every call hits its deadline; the run succeeds."""
    server.faults.hang(2.5, ALL)
    root = make_workspace(files())
    result = haz(
        "run",
        "--workspace",
        cwd=root,
        env=remote_env(server.url, HAZ_REMOTE_TIMEOUTS=FAST + ",upload_drain_s=1"),
    )
    server.faults.heal()
    assert result.code == 0, result.stderr
    assert result.sources() == {"app:build": "fresh", "lib:build": "fresh"}
    assert len(warning_lines(result.stderr)) == 1


def test_dry_run_predicts_remote_hits(
    haz: HazRunner, make_workspace: WorkspaceMaker, server: CacheServer
) -> None:
    """EXEC-030: --dry-run shows `remote hit`, and a remote hit's streams make its
    dependants' keys known."""
    first_root = make_workspace(files(app_reads_lib=False), name="a")
    assert haz("run", "--workspace", cwd=first_root, env=remote_env(server.url)).code == 0
    second_root = make_workspace(files(app_reads_lib=False), name="b")
    plain = haz("run", "--workspace", "--dry-run", cwd=second_root, env=remote_env(server.url))
    assert plain.code == 0, plain.stderr
    lines = plain.out.splitlines()
    assert any(line.startswith("lib:build") and line.endswith("remote hit") for line in lines)
    assert any(line.startswith("app:build") and line.endswith("remote hit") for line in lines)
    as_json = haz(
        "run", "--workspace", "--dry-run=json", cwd=second_root, env=remote_env(server.url)
    )
    states = {p["task"]: p["state"] for p in json.loads(as_json.out)}
    assert states == {"app:build": "remote hit", "lib:build": "remote hit"}
    without = haz("run", "--workspace", "--dry-run", cwd=second_root)
    assert "remote hit" not in without.out


def test_an_unreadable_tls_ca_is_a_usage_error(
    haz: HazRunner, make_workspace: WorkspaceMaker
) -> None:
    """SEC-005: a grpcs:// remote whose CA file is missing is a usage error (exit 2) naming
    the file, not a silent plaintext fallback."""
    root = make_workspace(files())
    result = haz(
        "run", "--workspace", "--remote", "grpcs://127.0.0.1:9", "--remote-ca", "nope.pem", cwd=root
    )
    assert result.code == 2
    assert "nope.pem" in result.stderr


def test_a_run_without_a_remote_does_not_import_grpc(make_workspace: WorkspaceMaker) -> None:
    """RC (design): `haz run` without a remote pays nothing for gRPC."""
    root = make_workspace(files())
    assert_run_without_grpc(
        root, {k: v for k, v in os.environ.items() if not k.startswith("HAZ_REMOTE")}
    )


def assert_run_without_grpc(root: Path, env: dict[str, str]) -> None:
    """`haz run --workspace` in ``root`` succeeds without ever importing gRPC."""
    code = (
        "import sys; from hazremote.cli.main import main; rc = main(['run', '--workspace']);"
        "assert rc == 0, rc; assert 'grpc' not in sys.modules, 'grpc imported';"
        "print('ok')"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        errors="replace",
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")


def test_a_local_replay_with_a_remote_configured_does_not_import_grpc(
    haz: HazRunner, make_workspace: WorkspaceMaker, server: CacheServer
) -> None:
    """RC-001 (design): when every task hits locally the remote is never needed, so gRPC is
    never loaded (~40 ms); a run that needs the remote still uses it."""
    root = make_workspace(files())
    first = haz("run", "--workspace", cwd=root, env=remote_env(server.url))
    assert first.sources() == {"app:build": "fresh", "lib:build": "fresh"}
    assert_run_without_grpc(root, {**os.environ, **remote_env(server.url)})
