"""A lying cache server: the generated servicer bases over dicts, on a real port.

Only for tests whose server must break the protocol on purpose, which the real server
(``cache_service.app.serve``, see ``tests.remote.conftest.CacheServer`` and
``tests.support.faultstore``) never does: it hands out bytes that do not match their digest
(``corrupt_reads``, substituted zstd ``frames``) and whatever a test writes into ``blobs`` and
``manifests`` (documents under another key, of chapter revision 0, naming undeclared outputs,
with hostile paths or modes, unparsable ones) — manifests and blobs the real server would
refuse. Otherwise it follows the wire contract of ``proto/haz/remote/v1/cache.proto``
(verify every write, RC-004; a manifest only when its blobs are present, RC-005; immutable
manifests, SEC-004; zstd on reads when accepted, RC-006), so a test can first fill it through
the client. It records the size of each lookup batch.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
import zstandard

from hazremote.domain.digest import digest_bytes
from hazremote.domain.model import HashName
from hazremote.wire.haz.remote.v1 import cache_pb2, cache_pb2_grpc, digest_pb2

HASHES: dict[int, HashName] = {
    digest_pb2.HASH_FUNCTION_BLAKE3: HashName.BLAKE3,
    digest_pb2.HASH_FUNCTION_SHA256: HashName.SHA256,
}


@dataclass
class LyingState:
    """Everything the liar holds, shared by its servicers (guarded by ``lock``)."""

    blobs: dict[bytes, bytes] = field(default_factory=dict)  # raw digest → uncompressed bytes
    manifests: dict[tuple[str, bytes], bytes] = field(default_factory=dict)
    lookup_batch_sizes: list[int] = field(default_factory=list)
    #: Serve every blob with its first byte flipped (bytes that do not match their digest).
    corrupt_reads: bool = False
    #: raw digest → the zstd frame BatchReadBlobs sends for it instead
    frames: dict[bytes, bytes] = field(default_factory=dict)
    max_batch_total: int = 4 << 20
    chunk_size: int = 1 << 20
    lock: threading.Lock = field(default_factory=threading.Lock)


def _hash_name(value: int) -> HashName:
    return HASHES[value]


class _Base:
    def __init__(self, state: LyingState) -> None:
        self.state = state

    def _enter(self, name: str, context: grpc.ServicerContext) -> None:
        del name, context  # every call is let in


def _decode(data: bytes, compression: int) -> bytes:
    if compression == cache_pb2.COMPRESSION_ZSTD:
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    return data


class Capabilities(_Base, cache_pb2_grpc.CapabilitiesServicer):  # type: ignore[misc]  # untyped stub
    def GetCapabilities(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._enter("GetCapabilities", context)
        return cache_pb2.ServerCapabilities(
            server_version="liar",
            compressions=[cache_pb2.COMPRESSION_IDENTITY, cache_pb2.COMPRESSION_ZSTD],
            max_batch_total_size_bytes=self.state.max_batch_total,
            max_batch_items=1000,
            stream_chunk_size_bytes=self.state.chunk_size,
            max_blob_size_bytes=0,
            auth_disabled=True,
        )


class ContentStore(_Base, cache_pb2_grpc.ContentStoreServicer):  # type: ignore[misc]  # untyped stub
    def FindMissingBlobs(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._enter("FindMissingBlobs", context)
        with self.state.lock:
            missing = [d for d in request.digests if d.hash not in self.state.blobs]
        return cache_pb2.FindMissingBlobsResponse(missing=missing)

    def _served(self, raw: bytes) -> bytes:
        data = self.state.blobs[raw]
        if self.state.corrupt_reads and data:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        elif self.state.corrupt_reads:
            data = b"x"
        return data

    def BatchReadBlobs(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._enter("BatchReadBlobs", context)
        zstd = cache_pb2.COMPRESSION_ZSTD in request.accepted_compressions
        items = []
        for digest in request.digests:
            with self.state.lock:
                present = digest.hash in self.state.blobs
            if not present:
                items.append(cache_pb2.BatchReadBlobsResponse.Item(digest=digest, status_code=5))
                continue
            frame = self.state.frames.get(digest.hash)
            if frame is not None:
                items.append(
                    cache_pb2.BatchReadBlobsResponse.Item(
                        digest=digest, data=frame, compression=cache_pb2.COMPRESSION_ZSTD
                    )
                )
                continue
            data = self._served(digest.hash)
            items.append(
                cache_pb2.BatchReadBlobsResponse.Item(
                    digest=digest,
                    data=zstandard.ZstdCompressor().compress(data) if zstd else data,
                    compression=cache_pb2.COMPRESSION_ZSTD
                    if zstd
                    else cache_pb2.COMPRESSION_IDENTITY,
                )
            )
        return cache_pb2.BatchReadBlobsResponse(items=items)

    def ReadBlob(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        self._enter("ReadBlob", context)
        with self.state.lock:
            present = request.digest.hash in self.state.blobs
        if not present:
            context.abort(grpc.StatusCode.NOT_FOUND, "no such blob")
        data = self._served(request.digest.hash)
        zstd = cache_pb2.COMPRESSION_ZSTD in request.accepted_compressions
        payload = zstandard.ZstdCompressor().compress(data) if zstd else data
        step = self.state.chunk_size
        for index, start in enumerate(range(0, max(1, len(payload)), step)):
            chunk = cache_pb2.ReadBlobChunk(data=payload[start : start + step])
            if index == 0:
                chunk.compression = (
                    cache_pb2.COMPRESSION_ZSTD if zstd else cache_pb2.COMPRESSION_IDENTITY
                )
            yield chunk

    def _accept(self, hash_function: int, digest: Any, data: bytes) -> int:
        if len(data) != digest.size_bytes or digest_bytes(_hash_name(hash_function), data).raw != (
            digest.hash
        ):
            return 3  # INVALID_ARGUMENT (RC-004)
        with self.state.lock:
            self.state.blobs[bytes(digest.hash)] = data
        return 0

    def BatchUpdateBlobs(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._enter("BatchUpdateBlobs", context)
        items = []
        for item in request.items:
            code = self._accept(
                request.hash_function, item.digest, _decode(item.data, item.compression)
            )
            items.append(
                cache_pb2.BatchUpdateBlobsResponse.Item(digest=item.digest, status_code=code)
            )
        return cache_pb2.BatchUpdateBlobsResponse(items=items)

    def WriteBlob(self, request_iterator: Iterator[Any], context: grpc.ServicerContext) -> Any:
        self._enter("WriteBlob", context)
        first: Any = None
        parts: list[bytes] = []
        for chunk in request_iterator:
            if first is None:
                first = chunk
            parts.append(chunk.data)
        assert first is not None
        data = _decode(b"".join(parts), first.compression)
        if self._accept(first.hash_function, first.digest, data) != 0:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bytes do not match their digest")
        return cache_pb2.WriteBlobResponse(committed_size_bytes=len(data))


def _content(document: bytes) -> Any:
    """SEC-004: what must be equal for two manifests of one key to be the same result."""
    obj = json.loads(document)
    return (obj["outputs"], obj["stdout"]["hash"], obj["stderr"]["hash"], obj["exit_code"])


class ManifestStore(_Base, cache_pb2_grpc.ManifestStoreServicer):  # type: ignore[misc]  # untyped stub
    def _get(self, namespace: str, key: bytes) -> Any:
        with self.state.lock:
            document = self.state.manifests.get((namespace, bytes(key)))
        if document is None:
            return cache_pb2.GetManifestResponse(found=False)
        return cache_pb2.GetManifestResponse(
            found=True, manifest_json=document, found_in_namespace=namespace
        )

    def GetManifest(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._enter("GetManifest", context)
        return self._get(request.namespace, request.key)

    def BatchGetManifests(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._enter("BatchGetManifests", context)
        with self.state.lock:
            self.state.lookup_batch_sizes.append(len(request.keys))
        return cache_pb2.BatchGetManifestsResponse(
            results=[self._get(request.namespace, key) for key in request.keys]
        )

    def PutManifest(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._enter("PutManifest", context)
        obj = json.loads(request.manifest_json)
        needed = [obj["stdout"]["hash"], obj["stderr"]["hash"]] + [
            o["hash"] for o in obj["outputs"]
        ]
        with self.state.lock:
            absent = [h for h in needed if bytes.fromhex(h) not in self.state.blobs]
            if absent:
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"missing blobs {absent}")
            slot = (request.namespace, bytes(request.key))
            existing = self.state.manifests.get(slot)
            if existing is not None:
                if _content(existing) != _content(request.manifest_json):
                    context.abort(grpc.StatusCode.ALREADY_EXISTS, "a different manifest exists")
                return cache_pb2.PutManifestResponse(created=False)
            obj["producer"] = "liar"
            self.state.manifests[slot] = json.dumps(obj).encode()
        return cache_pb2.PutManifestResponse(created=True)


class LyingServer:
    """The liar on ``127.0.0.1:<port>`` (a free port unless one is given)."""

    def __init__(self, state: LyingState | None = None, port: int = 0) -> None:
        self.state = state or LyingState()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        cache_pb2_grpc.add_CapabilitiesServicer_to_server(Capabilities(self.state), self._server)
        cache_pb2_grpc.add_ContentStoreServicer_to_server(ContentStore(self.state), self._server)
        cache_pb2_grpc.add_ManifestStoreServicer_to_server(ManifestStore(self.state), self._server)
        self.port = self._server.add_insecure_port(f"127.0.0.1:{port}")
        self._server.start()

    @property
    def url(self) -> str:
        return f"grpc://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self._server.stop(grace=None).wait()
