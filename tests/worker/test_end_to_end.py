"""The real haz-worker agent against a real ``serve()`` on loopback: a client's Execute is
leased to it, run in its sandbox, published and completed (RX-002/003/005/008)."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc.aio

from cache_service.servicers._execution_convert import action_message
from hazremote.cache.codec import BlobCodec
from hazremote.cache.manifest import RecordedKeyComponents, parse_manifest
from hazremote.compression import ZSTD_LEVEL
from hazremote.domain.digest import digest_bytes
from hazremote.domain.model import ShellAction
from hazremote.execute.sandbox import Sandbox
from hazremote.execute.spawn import SubprocessSpawner
from hazremote.keys import EnvEntry, EnvSource, InputFile, KeyComponents, frame_key
from hazremote.remote.action import ActionInput, Platform, RemoteAction
from hazremote.remote.settings import RemoteTimeouts
from hazremote.remote.transfer import BlobTransfer
from hazremote.wire.haz.remote.v1 import execution_pb2, execution_pb2_grpc
from tests.cache_service.server.executionkit import WAIT_S, H
from tests.cache_service.server.serverkit import running_server, upload
from worker.agent import Agent, AgentConfig, GrpcManifestPublisher
from worker.input_cache import InputCache
from worker.session import grpc_sessions

CONTENT = b"int a;\n"
PATH = os.environ.get("PATH", "/usr/bin:/bin")


def remote_action() -> RemoteAction:
    src = digest_bytes(H, CONTENT)
    components = KeyComponents(
        action=ShellAction(shell="sh", script="mkdir out; cp src/a.c out/a.o; echo built"),
        inputs=(InputFile(path="/src/a.c", executable=False, digest=src, size=len(CONTENT)),),
        env=(EnvEntry(name="PATH", source=EnvSource.SET, value=PATH),),
        cwd="",
        outputs=("/out/a.o",),
    )
    recorded = RecordedKeyComponents.from_components(components).to_json()
    return RemoteAction(
        task="app:build",
        namespace="main",
        hash_name=H,
        key=frame_key(components, H),
        key_components_json=json.dumps(recorded).encode(),
        command=components.action,
        env=(("PATH", PATH),),
        inputs=(ActionInput(path="/src/a.c", digest=src, size=len(CONTENT), mode=0o644),),
        output_patterns=("/out/a.o",),
        platform=Platform.of({"pool": "e2e"}),
    )


def test_a_submitted_action_runs_on_the_real_agent_and_completes_with_its_manifest(
    tmp_path: Path,
) -> None:
    with running_server() as server:
        upload(server, CONTENT)
        ready: list[tuple[asyncio.AbstractEventLoop, Agent]] = []
        started = threading.Event()

        async def run_agent() -> int:
            channel = grpc.aio.insecure_channel(server.target)
            with ThreadPoolExecutor(max_workers=2) as files:
                transfer = BlobTransfer(
                    lambda: channel,
                    hash_name=H,
                    namespace="main",
                    metadata=(),
                    timeouts=RemoteTimeouts(),
                    files=files,
                )
                cache = InputCache(
                    tmp_path / "inputs", max_bytes=1 << 20, hash_name=H, fetch=transfer.download
                )
                codec = BlobCodec(hash_name=H, level=ZSTD_LEVEL)
                agent = Agent(
                    config=AgentConfig(
                        worker_id="w-e2e",
                        slots=1,
                        platform=Platform.of({"pool": "e2e"}),
                        work_dir=tmp_path / "work",
                    ),
                    sessions=grpc_sessions(lambda: channel, token=None),
                    sandbox=Sandbox(
                        base=tmp_path / "sb", inputs=cache, spawner=SubprocessSpawner(), codec=codec
                    ),
                    cache=cache,
                    blobs=transfer,
                    manifests=GrpcManifestPublisher(lambda: channel, metadata=(), timeout_s=10),
                    codec=codec,
                )
                ready.append((asyncio.get_running_loop(), agent))
                started.set()
                try:
                    return await agent.run()
                finally:
                    await channel.close()

        codes: list[int] = []
        thread = threading.Thread(target=lambda: codes.append(asyncio.run(run_agent())))
        thread.start()
        try:
            assert started.wait(WAIT_S)
            action = remote_action()
            stub = execution_pb2_grpc.ExecutionStub(server.channel)
            updates = list(
                stub.Execute(
                    execution_pb2.ExecuteRequest(
                        action=action_message(action), wait_for_worker=True
                    ),
                    timeout=WAIT_S,
                )
            )
        finally:
            loop, agent = ready[0]
            loop.call_soon_threadsafe(agent.drain)
            thread.join(WAIT_S)
        assert codes == [0]
        kinds = [u.WhichOneof("update") for u in updates]
        assert kinds[-1] == "completed", updates
        assert "leased" in kinds
        logs = b"".join(u.log.data for u in updates if u.WhichOneof("update") == "log")
        assert logs == b"built\n"
        completed = updates[-1].completed
        assert completed.exit_code == 0
        manifest = parse_manifest(completed.manifest_json, chapter_revision=1, hash_name=H)
        assert manifest.key == action.key
        assert [(o.path, o.hash) for o in manifest.outputs] == [
            ("/out/a.o", digest_bytes(H, CONTENT))
        ]
