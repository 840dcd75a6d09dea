"""A minimal grpc.aio server: the raw-gRPC baseline of ``bench_cache_service``.

Spec coverage: none (benchmark support). Generic handlers, no interceptor, no thread pool, no
storage:

* ``SetReply(bytes)`` stores a serialized ``GetManifestResponse``;
* ``GetManifest(GetManifestRequest) -> GetManifestResponse`` answers the stored reply;
* ``Upload(stream bytes) -> bytes`` counts the bytes it received;
* ``Download(b"SEED,SIZE,CHUNK") -> stream bytes`` streams :func:`bench._svc_common.blob_chunks`.

Prints ``listening on HOST:PORT`` on stderr like ``haz-cache-service``; stops on SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc

from bench._svc_common import (
    ECHO_DOWNLOAD,
    ECHO_GET_MANIFEST,
    ECHO_SET_REPLY,
    ECHO_UPLOAD,
    blob_chunks,
    blob_pool,
    channel_options,
)
from hazremote.wire.haz.remote.v1 import cache_pb2


def _raw(data: bytes) -> bytes:
    return data


class _Echo(grpc.GenericRpcHandler):  # type: ignore[misc]
    def __init__(self) -> None:
        self.reply = cache_pb2.GetManifestResponse()
        self.pools: dict[int, bytes] = {}

    async def set_reply(self, request: bytes, context: Any) -> bytes:
        self.reply = cache_pb2.GetManifestResponse.FromString(request)
        return b""

    async def get_manifest(
        self, request: cache_pb2.GetManifestRequest, context: Any
    ) -> cache_pb2.GetManifestResponse:
        return self.reply

    async def upload(self, requests: AsyncIterator[bytes], context: Any) -> bytes:
        total = 0
        async for chunk in requests:
            total += len(chunk)
        return str(total).encode()

    async def download(self, request: bytes, context: Any) -> AsyncIterator[bytes]:
        seed, size, chunk = (int(x) for x in request.decode().split(","))
        pool = self.pools.get(seed)
        if pool is None:
            self.pools = {seed: blob_pool(seed)}  # one pool at a time: bounded memory
            pool = self.pools[seed]
        for piece in blob_chunks(pool, size, chunk):
            yield piece

    def service(self, handler_call_details: Any) -> Any:
        method = handler_call_details.method
        if method == ECHO_SET_REPLY:
            return grpc.unary_unary_rpc_method_handler(
                self.set_reply, request_deserializer=_raw, response_serializer=_raw
            )
        if method == ECHO_GET_MANIFEST:
            return grpc.unary_unary_rpc_method_handler(
                self.get_manifest,
                request_deserializer=cache_pb2.GetManifestRequest.FromString,
                response_serializer=cache_pb2.GetManifestResponse.SerializeToString,
            )
        if method == ECHO_UPLOAD:
            return grpc.stream_unary_rpc_method_handler(
                self.upload, request_deserializer=_raw, response_serializer=_raw
            )
        if method == ECHO_DOWNLOAD:
            return grpc.unary_stream_rpc_method_handler(
                self.download, request_deserializer=_raw, response_serializer=_raw
            )
        return None


async def main() -> None:
    server = grpc.aio.server(options=channel_options())
    server.add_generic_rpc_handlers((_Echo(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    print(f"listening on 127.0.0.1:{port}", file=sys.stderr, flush=True)
    await stopping.wait()
    await server.stop(1.0)


if __name__ == "__main__":
    asyncio.run(main())
