"""The haz-worker agent against a fake session and fake stores, running real processes in a
real sandbox (RX-003/004/005/007/008, CACHE-011)."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

import pytest

from hazremote.cache.codec import BlobCodec, FetchedBlob, verified_blob
from hazremote.cache.collect import StoredBlob
from hazremote.cache.manifest import RecordedKeyComponents, parse_manifest
from hazremote.compression import ZSTD_LEVEL
from hazremote.domain.digest import Digest, digest_bytes
from hazremote.domain.model import HashName, ShellAction
from hazremote.execute.sandbox import Sandbox
from hazremote.execute.spawn import SubprocessSpawner
from hazremote.keys import InputFile, KeyComponents
from hazremote.remote.action import Platform
from hazremote.remote.transfer import TransferError
from hazremote.wire.haz.remote.v1 import digest_pb2, execution_pb2
from worker.agent import Agent, AgentConfig, backoff_delay
from worker.input_cache import InputCache
from worker.session import Session, SessionLost

H = HashName.BLAKE3
SM = execution_pb2.ServerMessage
WM = execution_pb2.WorkerMessage
SOURCE = b"hello input\n"
KEY = digest_bytes(H, b"the key")


# -- fakes ------------------------------------------------------------------------------------


class FakeSession:
    def __init__(self) -> None:
        self.inbox: asyncio.Queue[SM | Exception | None] = asyncio.Queue()
        self.sent: list[WM] = []
        self.closed = False

    async def send(self, message: WM) -> None:
        if self.closed:
            raise SessionLost("closed")
        self.sent.append(message)

    async def receive(self) -> SM | None:
        item = await self.inbox.get()
        if isinstance(item, Exception):
            raise item
        return item

    async def close(self) -> None:
        self.closed = True

    def kinds(self, lease_id: str | None = None) -> list[str]:
        out = []
        for m in self.sent:
            kind = m.WhichOneof("message")
            if kind in ("heartbeat", "hello"):
                continue
            if lease_id is not None and getattr(m, str(kind)).lease_id != lease_id:
                continue
            out.append(str(kind))
        return out

    def of(self, kind: str) -> list[WM]:
        return [m for m in self.sent if m.WhichOneof("message") == kind]


class FakeService:
    """Hands out sessions, each welcomed at once (unless told not to connect)."""

    def __init__(self, *, refusals: int = 0) -> None:
        self.sessions: list[FakeSession] = []
        self.refusals = refusals
        self.connected = asyncio.Event()

    async def connect(self) -> Session:
        if self.refusals:
            self.refusals -= 1
            raise SessionLost("connection refused")
        session = FakeSession()
        session.inbox.put_nowait(SM(welcome=SM.Welcome(heartbeat_interval_ms=10)))
        self.sessions.append(session)
        self.connected.set()
        return session


class FakeBlobs:
    def __init__(self, store: Mapping[Digest, bytes]) -> None:
        self.store = dict(store)
        self.uploaded: dict[Digest, StoredBlob] = {}
        self.downloads = 0

    async def download(
        self, blobs: Mapping[Digest, int], dest: Path
    ) -> Mapping[Digest, FetchedBlob] | TransferError:
        self.downloads += 1
        return {
            d: verified_blob(self.store[d], digest=d, size=s, hash_name=H)
            for d, s in blobs.items()
            if d in self.store
        }

    async def upload(self, blobs: Sequence[StoredBlob]) -> TransferError | None:
        for blob in blobs:
            assert blob.path.exists()
            self.uploaded[blob.digest] = blob
        return None


class FakeManifests:
    def __init__(self) -> None:
        self.puts: list[tuple[str, Digest, bytes]] = []

    async def put_manifest(
        self, *, namespace: str, hash_name: HashName, key: Digest, manifest_json: bytes
    ) -> str | None:
        self.puts.append((namespace, key, manifest_json))
        return None


# -- building ---------------------------------------------------------------------------------


def lease(lease_id: str, script: str, *, grace_ms: int = 0) -> SM:
    src = digest_bytes(H, SOURCE)
    components = KeyComponents(
        action=ShellAction(shell="sh", script=script),
        inputs=(InputFile(path="/src/in.txt", executable=False, digest=src, size=len(SOURCE)),),
        cwd="",
        outputs=("/out/*",),
    )
    recorded = RecordedKeyComponents.from_components(components).to_json()
    action = execution_pb2.Action(
        task="app:build",
        namespace="ns1",
        hash_function=digest_pb2.HASH_FUNCTION_BLAKE3,
        key=KEY.raw,
        key_components_json=json.dumps(recorded).encode(),
        shell=execution_pb2.ShellScript(shell="sh", script=script),
        env=[digest_pb2.Property(name="PATH", value=os.environ.get("PATH", "/usr/bin:/bin"))],
        cwd="",
        inputs=[
            execution_pb2.ActionInput(
                path="/src/in.txt",
                digest=digest_pb2.Digest(hash=src.raw, size_bytes=len(SOURCE)),
                mode=0o644,
            )
        ],
        output_patterns=["/out/*"],
        grace_period_ms=grace_ms,
    )
    return SM(lease=SM.Lease(lease_id=lease_id, execution_id="e-" + lease_id, action=action))


class Rig:
    def __init__(self, tmp: Path, *, idle_exit_s: float | None = None, refusals: int = 0) -> None:
        self.service = FakeService(refusals=refusals)
        self.blobs = FakeBlobs({digest_bytes(H, SOURCE): SOURCE})
        self.manifests = FakeManifests()
        codec = BlobCodec(hash_name=H, level=ZSTD_LEVEL)
        cache = InputCache(
            tmp / "inputs", max_bytes=1 << 20, hash_name=H, fetch=self.blobs.download
        )
        self.agent = Agent(
            config=AgentConfig(
                worker_id="w1",
                slots=2,
                platform=Platform.of({"pool": "large"}),
                work_dir=tmp / "work",
                idle_exit_s=idle_exit_s,
                backoff_initial_s=0.001,
                backoff_max_s=0.01,
            ),
            sessions=self.service.connect,
            sandbox=Sandbox(
                base=tmp / "sandboxes", inputs=cache, spawner=SubprocessSpawner(), codec=codec
            ),
            cache=cache,
            blobs=self.blobs,
            manifests=self.manifests,
            codec=codec,
            clock=lambda: 1_700_000_000.0,
            jitter=lambda: 0.5,
        )

    @property
    def session(self) -> FakeSession:
        return self.service.sessions[-1]


async def until(condition: Callable[[], bool]) -> None:
    """Wait for ``condition`` (a hang guard bounds it, not a timing assertion)."""
    for _ in range(20_000):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition never became true")


def scenario(tmp: Path, body: Callable[[Rig], Awaitable[None]], **kw: object) -> Rig:
    rig = Rig(tmp, **kw)  # type: ignore[arg-type]  # keyword pass-through in tests

    async def main() -> None:
        runner = asyncio.create_task(rig.agent.run())
        await rig.service.connected.wait()
        await body(rig)
        assert await asyncio.wait_for(runner, 60) == 0

    asyncio.run(main())
    return rig


def finals(session: FakeSession, lease_id: str) -> list[WM]:
    return [
        m
        for m in session.sent
        if m.WhichOneof("message") in ("result", "released")
        and getattr(m, str(m.WhichOneof("message"))).lease_id == lease_id
    ]


# -- tests ------------------------------------------------------------------------------------


def test_hello_says_id_slots_and_platform_and_heartbeats_follow(tmp_path: Path) -> None:
    async def body(rig: Rig) -> None:
        await until(lambda: len(rig.session.of("heartbeat")) >= 2)
        rig.agent.drain()

    rig = scenario(tmp_path, body)
    hello = rig.service.sessions[0].sent[0].hello
    assert (hello.worker_id, hello.slots) == ("w1", 2)
    assert [(p.name, p.value) for p in hello.platform] == [("pool", "large")]
    assert list(hello.held_lease_ids) == []


def test_a_lease_runs_streams_its_logs_in_order_then_publishes_and_reports(
    tmp_path: Path,
) -> None:
    script = "cat src/in.txt; echo oops >&2; mkdir out; cp src/in.txt out/copy.txt; echo done"

    async def body(rig: Rig) -> None:
        rig.session.inbox.put_nowait(lease("L1", script))
        await until(lambda: bool(finals(rig.session, "L1")))
        rig.agent.drain()

    rig = scenario(tmp_path, body)
    session = rig.service.sessions[0]
    kinds = session.kinds("L1")
    assert kinds[-1] == "result"
    assert set(kinds[:-1]) == {"log"}
    stdout = b"".join(m.log.data for m in session.of("log") if m.log.stream == 0)
    stderr = b"".join(m.log.data for m in session.of("log") if m.log.stream == 1)
    assert stdout == SOURCE + b"done\n"
    assert stderr == b"oops\n"
    offsets = [m.log.offset for m in session.of("log") if m.log.stream == 0]
    assert offsets[0] == 0
    assert offsets == sorted(offsets)
    result = session.of("result")[0].result
    assert result.exit_code == 0
    assert result.manifest_published
    assert not result.failure_message
    assert len(rig.manifests.puts) == 1
    namespace, key, document = rig.manifests.puts[0]
    assert (namespace, key, document) == ("ns1", KEY, result.manifest_json)
    manifest = parse_manifest(document, chapter_revision=1, hash_name=H)
    assert [o.path for o in manifest.outputs] == ["/out/copy.txt"]
    assert manifest.outputs[0].hash == digest_bytes(H, SOURCE)
    assert manifest.stdout.hash == digest_bytes(H, SOURCE + b"done\n")
    assert manifest.key == KEY
    assert manifest.key_components.outputs == ("/out/*",)
    # Every blob the manifest names was uploaded before it was put.
    named = {manifest.stdout.hash, manifest.stderr.hash, *(o.hash for o in manifest.outputs)}
    assert named <= set(rig.blobs.uploaded)
    assert rig.blobs.downloads == 1


def test_a_nonzero_exit_reports_its_code_and_publishes_nothing(tmp_path: Path) -> None:
    async def body(rig: Rig) -> None:
        rig.session.inbox.put_nowait(lease("L1", "mkdir out; echo x > out/a; exit 3"))
        await until(lambda: bool(finals(rig.session, "L1")))
        rig.agent.drain()

    rig = scenario(tmp_path, body)
    result = rig.service.sessions[0].of("result")[0].result
    assert result.exit_code == 3
    assert not result.manifest_published
    assert not result.manifest_json
    assert rig.manifests.puts == []
    assert rig.blobs.uploaded == {}


def test_a_missing_input_blob_is_a_failure_message(tmp_path: Path) -> None:
    async def body(rig: Rig) -> None:
        rig.blobs.store.clear()
        rig.session.inbox.put_nowait(lease("L1", "true"))
        await until(lambda: bool(finals(rig.session, "L1")))
        rig.agent.drain()

    rig = scenario(tmp_path, body)
    result = rig.service.sessions[0].of("result")[0].result
    assert "inputs unavailable" in result.failure_message
    assert not result.manifest_published


def test_cancel_kills_the_process_group_and_publishes_nothing(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    # A background child in the same group, then the task waits: both must die.
    script = f"sleep 300 & echo $! > {pid_file}; echo started; wait"

    async def body(rig: Rig) -> None:
        rig.session.inbox.put_nowait(lease("L1", script, grace_ms=200))
        await until(lambda: bool(rig.session.of("log")))
        rig.session.inbox.put_nowait(SM(cancel=SM.Cancel(lease_id="L1")))
        await until(lambda: bool(finals(rig.session, "L1")))
        rig.agent.drain()

    rig = scenario(tmp_path, body)
    (final,) = finals(rig.service.sessions[0], "L1")
    assert final.WhichOneof("message") == "released"
    assert final.released.reason == execution_pb2.RELEASE_REASON_CANCELLED
    assert rig.manifests.puts == []
    child = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)


def test_a_broken_session_reconnects_and_resumes_the_held_lease(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    script = f"echo started; while [ ! -e {gate} ]; do sleep 0.01; done; mkdir out; echo r > out/r"

    async def body(rig: Rig) -> None:
        rig.session.inbox.put_nowait(lease("L1", script))
        await until(lambda: bool(rig.session.of("log")))
        rig.session.inbox.put_nowait(SessionLost("network down"))
        await until(lambda: len(rig.service.sessions) == 2)
        resumed = rig.service.sessions[1]
        # The held lease is heartbeated on the new session before the task may end.
        await until(lambda: any("L1" in m.heartbeat.lease_ids for m in resumed.of("heartbeat")))
        gate.touch()
        await until(lambda: bool(finals(rig.session, "L1")))
        rig.agent.drain()

    rig = scenario(tmp_path, body)
    first, second = rig.service.sessions
    assert first.closed
    assert list(second.sent[0].hello.held_lease_ids) == ["L1"]
    assert finals(first, "L1") == []
    (final,) = finals(second, "L1")
    assert final.result.manifest_published
    assert any("L1" in m.heartbeat.lease_ids for m in second.of("heartbeat"))


def test_connection_failures_are_retried(tmp_path: Path) -> None:
    async def body(rig: Rig) -> None:
        rig.agent.drain()

    rig = scenario(tmp_path, body, refusals=3)
    assert len(rig.service.sessions) == 1


def test_backoff_doubles_up_to_its_bound_with_jitter() -> None:
    delays = [backoff_delay(n, initial_s=0.5, max_s=30, jitter=lambda: 0.0) for n in range(10)]
    assert delays[:4] == [0.25, 0.5, 1.0, 2.0]
    assert max(delays) == 15.0
    assert backoff_delay(3, initial_s=0.5, max_s=30, jitter=lambda: 0.999) < 4.0


def test_drain_finishes_the_running_lease_and_releases_new_ones(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    script = f"echo started; while [ ! -e {gate} ]; do sleep 0.01; done; mkdir out; echo r > out/r"

    async def body(rig: Rig) -> None:
        rig.session.inbox.put_nowait(lease("L1", script))
        await until(lambda: bool(rig.session.of("log")))
        rig.agent.drain()
        rig.session.inbox.put_nowait(lease("L2", "true"))
        await until(lambda: bool(finals(rig.session, "L2")))
        gate.touch()

    rig = scenario(tmp_path, body)
    session = rig.service.sessions[0]
    (released,) = finals(session, "L2")
    assert released.released.reason == execution_pb2.RELEASE_REASON_DRAINING
    (result,) = finals(session, "L1")
    assert result.result.manifest_published
    assert rig.agent.stop_reason == "drained"


def test_a_second_drain_releases_running_leases_as_draining(tmp_path: Path) -> None:
    async def body(rig: Rig) -> None:
        rig.session.inbox.put_nowait(lease("L1", "echo started; sleep 300", grace_ms=100))
        await until(lambda: bool(rig.session.of("log")))
        rig.agent.drain()
        rig.agent.drain()

    rig = scenario(tmp_path, body)
    (final,) = finals(rig.service.sessions[0], "L1")
    assert final.released.reason == execution_pb2.RELEASE_REASON_DRAINING
    assert rig.manifests.puts == []


def test_idle_exit_ends_the_agent_after_a_quiet_spell(tmp_path: Path) -> None:
    async def body(rig: Rig) -> None:
        rig.session.inbox.put_nowait(lease("L1", "mkdir out; echo r > out/r"))

    rig = scenario(tmp_path, body, idle_exit_s=0.2)
    assert rig.agent.stop_reason == "idle"
    assert finals(rig.service.sessions[0], "L1")  # the lease ran before the idle spell


def test_a_malformed_or_hostile_action_is_released_as_rejected(tmp_path: Path) -> None:
    async def body(rig: Rig) -> None:
        bad = lease("L1", "true")
        bad.lease.action.inputs[0].path = "/../etc/passwd"
        rig.session.inbox.put_nowait(bad)
        broken = lease("L2", "true")
        broken.lease.action.key = b"short"
        rig.session.inbox.put_nowait(broken)
        await until(lambda: bool(finals(rig.session, "L1")) and bool(finals(rig.session, "L2")))
        rig.agent.drain()

    rig = scenario(tmp_path, body)
    session = rig.service.sessions[0]
    for lease_id in ("L1", "L2"):
        (final,) = finals(session, lease_id)
        assert final.released.reason == execution_pb2.RELEASE_REASON_REJECTED
    assert rig.manifests.puts == []
