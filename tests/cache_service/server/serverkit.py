"""Helpers of the server tests: an in-process server on a loopback port in its own thread,
real client stubs, blob and manifest builders."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import grpc
import zstandard

from cache_service.app import ExecutionOptions, RunningServer, serve
from cache_service.config import Address, Limits, ServiceConfig
from cache_service.identity import Authenticator
from cache_service.storage.base import BlobStore, ManifestStore
from cache_service.storage.memory import MemoryBlobStore, MemoryManifestStore
from cache_service.storage.verifying import VerifyingBlobStore
from hazremote.cache.manifest import (
    Compression,
    Manifest,
    OutputRecord,
    RecordedKeyComponents,
    StreamRecord,
)
from hazremote.domain.digest import digest_bytes
from hazremote.domain.model import CommandAction, HashName
from hazremote.wire.haz.remote.v1 import cache_pb2, cache_pb2_grpc, digest_pb2

HASH = HashName.BLAKE3
BLAKE3 = digest_pb2.HASH_FUNCTION_BLAKE3
IDENTITY = cache_pb2.COMPRESSION_IDENTITY
ZSTD = cache_pb2.COMPRESSION_ZSTD

#: Small limits so tests can cross them cheaply.
TEST_LIMITS = Limits(
    max_blob_size=4 << 20,
    max_batch_items=20,
    max_batch_total_size=256 << 10,
    max_message_size=1 << 20,
    max_concurrent_streams=8,
    stream_chunk_size=64 << 10,
)


def server_config(**overrides: object) -> ServiceConfig:
    options: dict[str, object] = {
        "listen": Address(host="127.0.0.1", port=0),
        "storage": "memory://",
        "metrics_listen": Address(host="127.0.0.1", port=0),
        "shutdown_grace": 2.0,
        "storage_threads": 8,
        "limits": TEST_LIMITS,
    }
    options.update(overrides)
    return ServiceConfig(**options)  # type: ignore[arg-type]


@dataclass
class ServerThread:
    """A running in-process server; ``blob_leaf`` is the unverified store under it."""

    running: RunningServer
    blob_leaf: MemoryBlobStore
    manifest_store: MemoryManifestStore
    channel: grpc.Channel
    stop: threading.Event = field(default_factory=threading.Event)
    loop_thread: int = 0  # the thread running the server's event loop

    @property
    def target(self) -> str:
        return self.running.address

    def capabilities(self) -> cache_pb2_grpc.CapabilitiesStub:
        return cache_pb2_grpc.CapabilitiesStub(self.channel)

    def content(self) -> cache_pb2_grpc.ContentStoreStub:
        return cache_pb2_grpc.ContentStoreStub(self.channel)

    def manifests(self) -> cache_pb2_grpc.ManifestStoreStub:
        return cache_pb2_grpc.ManifestStoreStub(self.channel)


@contextlib.contextmanager
def running_server(
    config: ServiceConfig | None = None,
    *,
    authenticator: Authenticator | None = None,
    config_storage: bool = False,
    manifests: ManifestStore | None = None,
    below_verification: Callable[[BlobStore], BlobStore] | None = None,
    around_manifests: Callable[[ManifestStore], ManifestStore] | None = None,
    execution: ExecutionOptions | None = None,
) -> Iterator[ServerThread]:
    """Start :func:`serve` in a thread with its own event loop; stop it on exit.

    By default the server runs over in-memory stores exposed as ``blob_leaf`` and
    ``manifest_store``; with ``config_storage`` it opens ``config.storage`` (disk, S3) through
    the real factory instead, and those two attributes are unused. ``manifests`` replaces
    the in-memory manifest store (e.g. a recording wrapper around it); ``below_verification``
    decorates the blob leaf under the :class:`VerifyingBlobStore` and ``around_manifests`` the
    manifest store served (e.g. injecting faults). ``execution`` sets the execution queue's
    settings and clock.
    """
    config = config or server_config()
    leaf = MemoryBlobStore()
    memory = MemoryManifestStore()
    served = manifests if manifests is not None else memory
    if around_manifests is not None:
        served = around_manifests(served)
    ready: list[tuple[RunningServer, int]] = []
    failure: list[BaseException] = []
    started = threading.Event()
    stop = threading.Event()

    async def main() -> None:
        try:
            verified: BlobStore = leaf if below_verification is None else below_verification(leaf)
            storage = None if config_storage else (VerifyingBlobStore(inner=verified), served)
            async with serve(
                config, storage=storage, authenticator=authenticator, execution=execution
            ) as running:
                ready.append((running, threading.get_ident()))
                started.set()
                while not stop.is_set():
                    await asyncio.sleep(0.02)
        except BaseException as exc:
            failure.append(exc)
            started.set()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    started.wait(30)
    if failure:
        raise failure[0]
    running, loop_thread = ready[0]
    channel = grpc.insecure_channel(
        running.address,
        options=[
            ("grpc.max_receive_message_length", 64 << 20),
            ("grpc.max_send_message_length", 64 << 20),
        ],
    )
    try:
        yield ServerThread(
            running=running,
            blob_leaf=leaf,
            manifest_store=memory,
            channel=channel,
            stop=stop,
            loop_thread=loop_thread,
        )
    finally:
        channel.close()
        stop.set()
        thread.join(30)


# -- blobs ------------------------------------------------------------------------------------


def digest_of(data: bytes) -> digest_pb2.Digest:
    return digest_pb2.Digest(hash=digest_bytes(HASH, data).raw, size_bytes=len(data))


def zstd(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=3).compress(data)


def unzstd(data: bytes) -> bytes:
    return zstandard.ZstdDecompressor().decompressobj().decompress(data)


def upload(server: ServerThread, *blobs: bytes) -> None:
    """Store small blobs through BatchUpdateBlobs; asserts every item succeeded."""
    reply = server.content().BatchUpdateBlobs(
        cache_pb2.BatchUpdateBlobsRequest(
            hash_function=BLAKE3,
            items=[
                cache_pb2.BatchUpdateBlobsRequest.Item(digest=digest_of(b), data=b) for b in blobs
            ],
        )
    )
    assert [item.status_code for item in reply.items] == [0] * len(blobs)


def write_chunks(
    data: bytes, *, compression: int = IDENTITY, chunk: int = 64 << 10, finish: bool = True
) -> list[cache_pb2.WriteBlobChunk]:
    payload = zstd(data) if compression == ZSTD else data
    pieces = [payload[i : i + chunk] for i in range(0, len(payload), chunk)] or [b""]
    messages = [cache_pb2.WriteBlobChunk(data=p) for p in pieces]
    first = messages[0]
    first.hash_function = BLAKE3
    first.digest.CopyFrom(digest_of(data))
    first.compression = compression  # type: ignore[assignment]
    messages[-1].finish = finish
    return messages


# -- manifests --------------------------------------------------------------------------------


def make_manifest(
    *,
    key_label: str,
    stdout: bytes = b"out\n",
    stderr: bytes = b"",
    outputs: dict[str, bytes] | None = None,
    created_at: int = 1_700_000_000,
    duration_ms: int = 12,
    producer: str = "client-says",
) -> Manifest:
    key = digest_bytes(HASH, key_label.encode())
    return Manifest(
        chapter_revision=0,
        hash_function=HASH,
        key=key,
        created_at_unix=created_at,
        duration_ms=duration_ms,
        producer=producer,
        stdout=StreamRecord(
            hash=digest_bytes(HASH, stdout), size=len(stdout), compression=Compression.NONE
        ),
        stderr=StreamRecord(
            hash=digest_bytes(HASH, stderr), size=len(stderr), compression=Compression.NONE
        ),
        outputs=tuple(
            OutputRecord(
                path=path,
                hash=digest_bytes(HASH, data),
                size=len(data),
                mode=0o644,
                compression=Compression.ZSTD,
            )
            for path, data in sorted((outputs or {}).items())
        ),
        key_components=RecordedKeyComponents(
            action=CommandAction(argv=("make",)),
            inputs=(),
            predecessors=(),
            env=(),
            cwd="/app",
            outputs=("/app/dist/**",),
        ),
    )


def put_request(
    manifest: Manifest, *, namespace: str = "main", document: bytes | None = None
) -> cache_pb2.PutManifestRequest:
    return cache_pb2.PutManifestRequest(
        namespace=namespace,
        hash_function=BLAKE3,
        key=manifest.key.raw,
        manifest_json=manifest.to_json() if document is None else document,
    )
