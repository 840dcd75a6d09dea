"""``haz run`` against a half-broken or lying remote: each fault costs what it must, no more.

The real ``haz`` binary (or client) against the real server over fault-injecting memory
stores, or the lying server (:mod:`tests.remote.lyingserver`) where a manifest the real
server refuses must be served.

Spec coverage:
* RC-003 — a breaker per kind of operation: lookups that never answer open the lookup
  breaker even while uploads succeed, so a chain of tasks stops paying a deadline per level.
* RC-003 — one warning per fault episode: many refused remote entries are one summarised
  warning (count and first example), not one line each.
* RC-001/RC-003 — a manifest the client cannot parse is a miss of its own task only: the
  other hits of the same ``BatchGetManifests`` are used, and it is not a breaker failure.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable

from hazremote.remote import BreakerState
from tests.cache.cachekit import Env, make_key
from tests.remote.conftest import FAST as FAST_CLIENT
from tests.remote.conftest import CacheServer
from tests.remote.lyingserver import LyingServer
from tests.remote.test_remote_client import client, stored, upload
from tests.run.conftest import HazRunner, WorkspaceMaker, py
from tests.support.faultstore import LOOKUPS

#: A cool-down longer than any run here: once open, the breaker stays open for the run, so
#: the number of calls that reach the server is exact, whatever the machine's speed.
NO_REPROBE = "connect_s=2,lookup_s=1,transfer_s=10,breaker_failures=2,breaker_cooldown_s=600"
#: Short enough to keep the tests quick, long enough for a loaded CI machine.
FAST = "connect_s=2,lookup_s=2,transfer_s=10,breaker_failures=2,breaker_cooldown_s=0.5"


def remote_env(url: str, timeouts: str = FAST) -> dict[str, str]:
    return {"HAZ_REMOTE_URL": url, "HAZ_REMOTE_TIMEOUTS": timeouts}


def chain(levels: int) -> dict[str, str]:
    """``p0:build`` → ``p1:build`` → …: each level reads the previous level's output, so its
    key is known only once that level is done (one lookup per level, none batched)."""
    names = [f"p{i}" for i in range(levels)]
    layout = {".haz/workspace.yml": f"projects: [{', '.join(names)}]\n", "p0/src.txt": "start\n"}
    for i, name in enumerate(names):
        source = "src.txt" if i == 0 else f"../p{i - 1}/out.txt"
        command = py(
            "import pathlib;"
            f"text = pathlib.Path({source!r}).read_text();"
            f"pathlib.Path('out.txt').write_text(text + '{i}\\n')"
        )
        inputs = "[src.txt]" if i == 0 else f"[/p{i - 1}/out.txt]"
        deps = "" if i == 0 else f"    deps: [p{i - 1}:build]\n"
        layout[f"{name}/haz.yml"] = (
            f"tasks:\n  build:\n    command: {command}\n    inputs: {inputs}\n"
            f"    outputs: [out.txt]\n{deps}"
        )
    return layout


def siblings(count: int) -> dict[str, str]:
    """``count`` independent tasks (``p0:build`` …), all ready at once: one lookup batch."""
    names = [f"p{i}" for i in range(count)]
    layout = {".haz/workspace.yml": f"projects: [{', '.join(names)}]\n"}
    for i, name in enumerate(names):
        command = py(f"import pathlib; pathlib.Path('out.txt').write_text('{i}\\n')")
        layout[f"{name}/src.txt"] = f"{i}\n"
        layout[f"{name}/haz.yml"] = (
            f"tasks:\n  build:\n    command: {command}\n    inputs: [src.txt]\n"
            "    outputs: [out.txt]\n"
        )
    return layout


def remote_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "remote cache grpc://" in line]


def test_dead_lookups_open_their_breaker_while_uploads_succeed(
    haz: HazRunner, make_workspace: WorkspaceMaker, server: CacheServer
) -> None:
    """RC-003 (issue 13, item 10): BatchGetManifests never answers, uploads work. Each
    successful upload used to reset the one breaker, so every level of the chain paid a
    lookup deadline; now two failed lookups open the lookup breaker and the rest of the
    chain is not even sent."""
    server.faults.hang(5.0, LOOKUPS)
    root = make_workspace(chain(8), name="chain")
    result = haz("run", "--workspace", cwd=root, env=remote_env(server.url, NO_REPROBE))
    assert result.code == 0, result.stderr
    for i in range(8):
        assert result.task(f"p{i}:build")["source"] == "fresh"
    assert (root / "p7" / "out.txt").read_text() == "start\n" + "".join(f"{i}\n" for i in range(8))
    assert server.faults.rpcs["BatchGetManifests"] == 2  # breaker_failures, then open
    assert len(server.manifests()) == 8  # the healthy upload path was still used
    (line,) = remote_lines(result.stderr)
    assert "circuit breaker opened 1 time(s)" in line


def test_successful_uploads_do_not_reset_the_lookup_breaker(
    server: CacheServer, make_env: Callable[[str], Env]
) -> None:
    """RC-003 (issue 13, item 10), the mechanism itself: lookups that hit their deadline
    alternate with uploads that succeed, as they do along a task chain. The lookup breaker
    opens after ``breaker_failures`` lookups; the upload breaker stays closed."""
    server.faults.hang(3.0, LOOKUPS)
    env = make_env("a")
    manifests = [stored(env, f"level{i}", {f"/dist/{i}": str(i).encode()}) for i in range(8)]

    async def scenario() -> tuple[list[bool], BreakerState, BreakerState, str | None]:
        # No re-probe within the test, however slow the machine: the call count is exact.
        remote = client(
            server.url, timeouts=dataclasses.replace(FAST_CLIENT, breaker_cooldown_s=600)
        )
        try:
            done = []
            for manifest in manifests:
                assert await remote.lookup(make_key(f"next-{manifest.key.hex}")) is None
                done.append(await upload(remote, env, manifest))
            return (
                done,
                remote.breaker("lookup").state,
                remote.breaker("upload").state,
                remote.warning(),
            )
        finally:
            await remote.close()

    done, lookups, uploads, warning = asyncio.run(scenario())
    assert done == [True] * 8
    assert server.faults.rpcs["BatchGetManifests"] == FAST_CLIENT.breaker_failures
    assert lookups is BreakerState.OPEN
    assert uploads is BreakerState.CLOSED
    assert warning is not None
    assert "circuit breaker opened 1 time(s)" in warning


def tamper_all(server: LyingServer, change: Callable[[dict[str, object]], None]) -> int:
    """Apply ``change`` to every stored manifest (a lying server); how many were changed."""
    for slot, document in list(server.state.manifests.items()):
        manifest = json.loads(document)
        change(manifest)
        server.state.manifests[slot] = json.dumps(manifest).encode()
    return len(server.state.manifests)


def with_huge_integer(document: bytes) -> bytes:
    """``document`` with an exit code json cannot load at all: an integer beyond Python's
    4,300-digit limit raises ValueError, not JSONDecodeError (issue 13, items 8 and 12)."""
    manifest = json.loads(document)
    manifest["exit_code"] = "HUGE"
    return json.dumps(manifest).encode().replace(b'"HUGE"', b"9" * 5000)


def test_an_unparsable_manifest_costs_only_its_own_key(
    liar: LyingServer, make_env: Callable[[str], Env]
) -> None:
    """RC-001/RC-003 (issue 13, item 12): one entry of a BatchGetManifests batch that the
    client cannot parse is a miss of its key; the other hits of the batch are used, and it is
    no breaker failure: batch after batch, the lookups still go out and still hit.

    Needs the liar: the real server refuses a document it cannot parse."""
    server = liar
    env = make_env("a")
    manifests = [stored(env, f"k{i}", {f"/dist/{i}": str(i).encode()}) for i in range(3)]

    async def scenario() -> tuple[list[list[bool]], BreakerState, str | None]:
        remote = client(server.url)
        try:
            for manifest in manifests:
                assert await upload(remote, env, manifest)
            slot = ("main", make_key("k1").raw)
            server.state.manifests[slot] = with_huge_integer(server.state.manifests[slot])
            rounds = []
            for _ in range(3):  # more than breaker_failures rounds
                found = await asyncio.gather(*(remote.lookup(make_key(f"k{i}")) for i in range(3)))
                rounds.append([manifest is not None for manifest in found])
            return rounds, remote.breaker("lookup").state, remote.warning()
        finally:
            await remote.close()

    rounds, state, warning = asyncio.run(scenario())
    assert rounds == [[True, False, True]] * 3
    assert server.state.lookup_batch_sizes == [3, 3, 3]  # one batch per round, none refused
    assert state is BreakerState.CLOSED
    assert warning is not None
    assert "an integer of more than" in warning  # the parser names it (item 8)
    assert "(+2 more remote error(s))" in warning  # one per bad answer, one warning


def test_an_unparsable_remote_manifest_costs_one_task_of_a_run(
    haz: HazRunner, make_workspace: WorkspaceMaker, liar: LyingServer
) -> None:
    """RC-003 (issue 13, item 12) end to end: of three tasks looked up in one batch, the one
    whose remote manifest cannot be parsed runs; the two others are remote hits.

    Needs the liar: the real server refuses a document it cannot parse."""
    server = liar
    first = make_workspace(siblings(3), name="honest")
    assert haz("run", "--workspace", cwd=first, env=remote_env(server.url)).code == 0
    (slot,) = [
        slot
        for slot, document in server.state.manifests.items()
        if json.loads(document)["key_components"]["cwd"] == "p1"
    ]
    server.state.manifests[slot] = with_huge_integer(server.state.manifests[slot])

    second = make_workspace(siblings(3), name="second")
    result = haz("run", "--workspace", cwd=second, env=remote_env(server.url))
    assert result.code == 0, result.stderr
    assert result.sources() == {
        "p0:build": "remote-cache",
        "p1:build": "fresh",
        "p2:build": "remote-cache",
    }
    (line,) = remote_lines(result.stderr)
    assert "an integer of more than" in line  # the parser names it (item 8)


def test_many_refused_remote_entries_are_one_warning(
    haz: HazRunner, make_workspace: WorkspaceMaker, liar: LyingServer
) -> None:
    """RC-003 (issue 13, item 11): a lying server whose 20 entries each name an output the task
    does not declare costs 20 local runs and ONE warning (count and first example), not 20.

    Needs the liar: it serves documents rewritten after the upload (the real server keeps
    entries immutable, SEC-004)."""
    server = liar
    first = make_workspace(siblings(20), name="honest")
    assert haz("run", "--workspace", cwd=first, env=remote_env(server.url)).code == 0

    def undeclared(manifest: dict[str, object]) -> None:
        outputs = manifest["outputs"]
        assert isinstance(outputs, list)
        outputs[0]["path"] = outputs[0]["path"].replace("out.txt", "planted.txt")

    assert tamper_all(server, undeclared) == 20
    second = make_workspace(siblings(20), name="second")
    result = haz("run", "--workspace", cwd=second, env=remote_env(server.url))
    assert result.code == 0, result.stderr
    assert set(result.sources().values()) == {"fresh"}
    refused = [line for line in result.stderr.splitlines() if "not restored" in line]
    assert len(refused) == 1, result.stderr
    assert "(+19 more entries not restored)" in refused[0]
    assert not any((second / f"p{i}" / "planted.txt").exists() for i in range(20))
