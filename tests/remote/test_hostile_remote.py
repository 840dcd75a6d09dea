"""A compromised cache server cannot make ``haz`` write outside a task's declared outputs.

Spec coverage: SEC-001 re-verified for remote hits — a manifest from the remote that names a
path outside the workspace (`..`), a path outside the task's declared outputs, a path through
a symlinked directory, or a setuid mode is refused (the task runs locally, exit 0), and
nothing is written where it must not be. RC-004: a blob whose bytes do not match is a miss.
"""

from __future__ import annotations

import json
import os
import stat

import blake3
import pytest

from tests.remote.lyingserver import LyingServer
from tests.remote.test_run_remote import files, remote_env
from tests.run.conftest import HazRunner, WorkspaceMaker


@pytest.fixture
def server(liar: LyingServer) -> LyingServer:
    """The lying server: every test here serves manifests and blobs rewritten after the
    upload (hostile paths, modes, swapped bytes), which the real server never hands out."""
    return liar


EVIL = b"#!/bin/sh\necho pwned\n"


def tamper(server: LyingServer, task_cwd: str, change: dict[str, object]) -> None:
    """Add a hostile output record to the stored manifest of the task run in ``task_cwd``."""
    digest = blake3.blake3(EVIL).digest()
    server.state.blobs[digest] = EVIL
    for slot, document in list(server.state.manifests.items()):
        manifest = json.loads(document)
        if manifest["key_components"]["cwd"] != task_cwd:
            continue
        hostile = {
            "path": "/lib/dist/extra.sh",
            "hash": digest.hex(),
            "size": len(EVIL),
            "mode": 0o755,
            "compression": "none",
        } | change
        manifest["outputs"].append(hostile)
        server.state.manifests[slot] = json.dumps(manifest).encode()
        return
    raise AssertionError(f"no manifest for {task_cwd!r}")


@pytest.mark.parametrize(
    ("change", "victim"),
    [
        ({"path": "/../escaped.sh"}, "../escaped.sh"),
        ({"path": "/app/not-an-output.sh"}, "app/not-an-output.sh"),
        ({"path": "/lib/linked/evil.sh"}, "../outside/evil.sh"),
    ],
    ids=["dot-dot", "undeclared-path", "symlinked-parent"],
)
def test_hostile_remote_manifests_are_refused_and_write_nothing(
    haz: HazRunner,
    make_workspace: WorkspaceMaker,
    server: LyingServer,
    change: dict[str, object],
    victim: str,
) -> None:
    # Both clones declare `linked/**` as outputs too, so the keys agree and only SEC-001's
    # symlinked-parent check stands between the hostile entry and the outside directory.
    layout = files()
    layout["lib/haz.yml"] = layout["lib/haz.yml"].replace("[dist/**]", "[dist/**, linked/**]")
    first = make_workspace(layout, name="honest")
    assert haz("run", "--workspace", cwd=first, env=remote_env(server.url)).code == 0
    tamper(server, "lib", change)

    second = make_workspace(layout, name="victim")
    outside = second.parent / "outside"
    outside.mkdir()
    os.symlink(outside, second / "lib" / "linked")

    result = haz("run", "--workspace", cwd=second, env=remote_env(server.url))
    assert result.code == 0, result.stderr
    assert result.task("lib:build")["source"] != "remote-cache"
    assert not (second / victim).exists()
    assert list(outside.iterdir()) == []
    assert not (second / "lib" / "dist" / "extra.sh").exists()
    # The refused entry is not backfilled into the local cache either (RC-001).
    cached = [p for p in (second / ".haz" / "cache").rglob("*") if p.is_file()]
    assert cached
    assert all(p.read_bytes() != EVIL for p in cached)


def test_setuid_bits_from_the_remote_are_never_restored(
    haz: HazRunner, make_workspace: WorkspaceMaker, server: LyingServer
) -> None:
    first = make_workspace(files(), name="honest")
    assert haz("run", "--workspace", cwd=first, env=remote_env(server.url)).code == 0
    tamper(server, "lib", {"mode": 0o4755})
    second = make_workspace(files(), name="victim")
    result = haz("run", "--workspace", cwd=second, env=remote_env(server.url))
    assert result.code == 0, result.stderr
    assert result.task("lib:build")["source"] == "remote-cache"  # a declared output: restored
    extra = second / "lib" / "dist" / "extra.sh"
    assert extra.read_bytes() == EVIL
    assert stat.S_IMODE(extra.stat().st_mode) == 0o755  # setuid masked away (SEC-001)


def test_a_blob_with_other_bytes_is_a_miss(
    haz: HazRunner, make_workspace: WorkspaceMaker, server: LyingServer
) -> None:
    """RC-004: the client verifies every byte; a swapped blob is a miss and the task runs."""
    first = make_workspace(files(), name="honest")
    assert haz("run", "--workspace", cwd=first, env=remote_env(server.url)).code == 0
    for digest, data in list(server.state.blobs.items()):
        if data.startswith(b"HELLO"):
            server.state.blobs[digest] = data.replace(b"HELLO", b"EVIL!")
    second = make_workspace(files(), name="victim")
    result = haz("run", "--workspace", cwd=second, env=remote_env(server.url))
    assert result.code == 0
    assert result.task("lib:build")["source"] == "fresh"
    assert (second / "lib" / "dist" / "app.bin").read_bytes().startswith(b"HELLO")
