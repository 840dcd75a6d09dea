"""Helpers of the execution tests: actions built the way the client builds them, a fake
worker speaking the real WorkerSession stream, and a client's Execute stream read with
timeouts (our own test helpers over real gRPC stubs)."""

from __future__ import annotations

import json
import os
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import grpc

from cache_service.servicers._execution_convert import action_message
from hazremote.cache.manifest import RecordedKeyComponents
from hazremote.domain.digest import digest_bytes
from hazremote.domain.model import CommandAction, HashName
from hazremote.keys import InputFile, KeyComponents, frame_key
from hazremote.remote.action import ActionInput, Platform, RemoteAction
from hazremote.wire.haz.remote.v1 import digest_pb2, execution_pb2, execution_pb2_grpc

H = HashName.BLAKE3
#: A generous bound on any one wait (never a timing claim: a hang fails instead of blocking).
WAIT_S = 20.0

Metadata = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class BuiltAction:
    action: RemoteAction
    blobs: tuple[bytes, ...]  # the input contents the client uploads first

    def request(self, *, wait_for_worker: bool = True) -> execution_pb2.ExecuteRequest:
        return execution_pb2.ExecuteRequest(
            action=action_message(self.action), wait_for_worker=wait_for_worker
        )


def build_action(*, pool: str, namespace: str = "main", label: str | None = None) -> BuiltAction:
    """A valid action (components → key) with one fresh input, for workers of ``pool``."""
    content = (label or os.urandom(8).hex()).encode() + b"\n"
    src = digest_bytes(H, content)
    components = KeyComponents(
        action=CommandAction(argv=("cc", "-c", "src/a.c")),
        inputs=(InputFile(path="/src/a.c", executable=False, digest=src, size=len(content)),),
        predecessors=(),
        env=(),
        cwd="",
        outputs=("/out/a.o",),
    )
    recorded = RecordedKeyComponents.from_components(components).to_json()
    action = RemoteAction(
        task="app:build",
        namespace=namespace,
        hash_name=H,
        key=frame_key(components, H),
        key_components_json=json.dumps(recorded).encode(),
        command=components.action,
        inputs=(ActionInput(path="/src/a.c", digest=src, size=len(content), mode=0o644),),
        output_patterns=("/out/a.o",),
        platform=Platform.of({"pool": pool}),
    )
    return BuiltAction(action=action, blobs=(content,))


class Updates:
    """A client's Execute (or WaitExecution) stream, read one update at a time."""

    def __init__(self, call: Iterator[execution_pb2.ExecutionUpdate]) -> None:
        self._call = call

    def next(self) -> execution_pb2.ExecutionUpdate:
        return next(self._call)

    def kinds_until_end(self) -> list[execution_pb2.ExecutionUpdate]:
        return list(self._call)


def execute(
    channel: grpc.Channel,
    built: BuiltAction,
    *,
    wait_for_worker: bool = True,
    metadata: Metadata = (),
) -> Updates:
    stub = execution_pb2_grpc.ExecutionStub(channel)
    return Updates(
        stub.Execute(
            built.request(wait_for_worker=wait_for_worker), metadata=metadata, timeout=WAIT_S
        )
    )


class FakeWorker:
    """A worker session over the real ``WorkerSession/Connect`` stream: sends hello at once,
    then whatever the test sends; what the server sends is read with :meth:`receive`."""

    def __init__(
        self,
        channel: grpc.Channel,
        *,
        worker_id: str,
        pool: str,
        slots: int = 1,
        held: tuple[str, ...] = (),
        metadata: Metadata = (),
    ) -> None:
        self.worker_id = worker_id
        self._outbox: queue.Queue[execution_pb2.WorkerMessage | None] = queue.Queue()
        self._inbox: queue.Queue[execution_pb2.ServerMessage | BaseException | None] = queue.Queue()
        self._outbox.put(
            execution_pb2.WorkerMessage(
                hello=execution_pb2.WorkerMessage.Hello(
                    worker_id=worker_id,
                    slots=slots,
                    platform=[digest_pb2.Property(name="pool", value=pool)],
                    held_lease_ids=list(held),
                )
            )
        )
        stub = execution_pb2_grpc.WorkerSessionStub(channel)
        self._call = stub.Connect(iter(self._outbox.get, None), metadata=metadata, timeout=60)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for message in self._call:
                self._inbox.put(message)
        except BaseException as exc:  # the stream's status, for the test to see
            self._inbox.put(exc)
        else:
            self._inbox.put(None)

    def receive(self) -> execution_pb2.ServerMessage:
        """The next message from the server (fails on the stream's end or error)."""
        item = self._inbox.get(timeout=WAIT_S)
        if isinstance(item, BaseException):
            raise item
        assert item is not None, "the session ended"
        return item

    def ended(self) -> BaseException | None:
        """Wait for the stream's end: None when it ended OK, else its error."""
        while True:
            item = self._inbox.get(timeout=WAIT_S)
            if item is None or isinstance(item, BaseException):
                return item

    def send(self, message: execution_pb2.WorkerMessage) -> None:
        self._outbox.put(message)

    def log(self, lease_id: str, data: bytes, *, offset: int, stderr: bool = False) -> None:
        self.send(
            execution_pb2.WorkerMessage(
                log=execution_pb2.WorkerMessage.LogChunk(
                    lease_id=lease_id,
                    stream=(
                        execution_pb2.LOG_STREAM_STDERR
                        if stderr
                        else execution_pb2.LOG_STREAM_STDOUT
                    ),
                    data=data,
                    offset=offset,
                )
            )
        )

    def result(self, lease_id: str, manifest: bytes) -> None:
        self.send(
            execution_pb2.WorkerMessage(
                result=execution_pb2.WorkerMessage.Result(
                    lease_id=lease_id,
                    exit_code=0,
                    manifest_published=True,
                    manifest_json=manifest,
                    duration_ms=7,
                )
            )
        )

    def close(self) -> None:
        self._outbox.put(None)
        self._call.cancel()
