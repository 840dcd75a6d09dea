"""The blob streams' messages on the wire, encoded and decoded without copying chunks.

Spec coverage:
* RC-006 — a ``WriteBlobChunk``'s ``data`` is a view of the received bytes
  (:func:`decode_write_chunk`); ``ReadBlobChunk`` messages are built with one copy of each
  chunk (:func:`encode_read_chunks`), byte for byte what protobuf serializes.
Out of scope: what the streams do (:mod:`.content`).
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc

from hazremote.wire.haz.remote.v1 import cache_pb2, cache_pb2_grpc, digest_pb2

if TYPE_CHECKING:
    from cache_service.servicers.content import ContentStoreServicer

__all__ = ["WriteChunk", "add_content_store", "decode_write_chunk", "encode_read_chunks"]


@dataclass(frozen=True, slots=True)
class WriteChunk:
    """A decoded ``WriteBlobChunk`` whose ``data`` is a view of the received message."""

    hash_function: int
    digest: digest_pb2.Digest
    compression: int
    data: memoryview
    finish: bool


#: The key of ``WriteBlobChunk.data``: field 4, wire type 2 (length-delimited).
_DATA_KEY = (4 << 3) | 2
_NO_FIELDS = cache_pb2.WriteBlobChunk()
_EMPTY = memoryview(b"")


class _Irregular(Exception):
    """The message is not in the plain form :func:`decode_write_chunk` reads itself."""


def _varint(raw: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = raw[pos]  # IndexError: truncated
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise _Irregular


def decode_write_chunk(raw: bytes) -> WriteChunk:
    """A ``WriteBlobChunk`` from its encoding, its ``data`` a view of ``raw`` (no copy).

    The top-level fields are walked here; every field but ``data`` is handed to protobuf as it
    is (in order, so repeated and unknown fields mean what they mean to protobuf). Anything
    out of the ordinary (a group, a truncated field) is left to protobuf whole.

    Raises:
        google.protobuf.message.DecodeError: ``raw`` is not a valid message.
    """
    end = len(raw)
    data = _EMPTY
    rest: list[memoryview] = []
    view = memoryview(raw)
    pos = 0
    try:
        while pos < end:
            start = pos
            key, pos = _varint(raw, pos)
            wire_type = key & 7
            if wire_type == 0:
                pos = _varint(raw, pos)[1]
            elif wire_type == 2:
                if key == _DATA_KEY and pos - start != 1:
                    raise _Irregular  # a key in more bytes than it needs
                length, pos = _varint(raw, pos)
                if key == _DATA_KEY and pos + length <= end:
                    data = view[pos : pos + length]  # the last occurrence wins, as in protobuf
                    pos += length
                    continue
                pos += length
            elif wire_type == 1:
                pos += 8
            elif wire_type == 5:
                pos += 4
            else:
                raise _Irregular
            if pos > end:
                raise _Irregular
            rest.append(view[start:pos])
    except (_Irregular, IndexError):
        fields = cache_pb2.WriteBlobChunk.FromString(raw)
        data = memoryview(fields.data)
    else:
        fields = cache_pb2.WriteBlobChunk.FromString(b"".join(rest)) if rest else _NO_FIELDS
    return WriteChunk(
        hash_function=fields.hash_function,
        digest=fields.digest,
        compression=fields.compression,
        data=data,
        finish=fields.finish,
    )


#: The key of ``ReadBlobChunk.data``: field 2, wire type 2.
_READ_DATA_KEY = b"\x12"


def _varint_bytes(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_read_chunks(
    compression: cache_pb2.Compression, chunks: Generator[bytes, None, None]
) -> Generator[bytes, None, None]:
    """The encoded ``ReadBlobChunk`` messages of a ReadBlob stream: byte for byte what protobuf
    serializes (``compression`` on the first, which is sent even for an empty remainder), built
    with one copy of each chunk where building and serializing messages costs two, and in the
    storage thread that reads the chunks rather than on the event loop. Closing it closes
    ``chunks`` (releasing the stored data)."""
    head = cache_pb2.ReadBlobChunk(compression=compression).SerializeToString()
    sent = False
    try:
        for chunk in chunks:
            if chunk:
                yield b"".join((head, _READ_DATA_KEY, _varint_bytes(len(chunk)), chunk))
                head, sent = b"", True
        if not sent:  # an empty remainder still tells the client its encoding
            yield head
    finally:
        chunks.close()


def _encoded(message: Any) -> bytes:
    """A response that is already encoded passes as it is."""
    return message if isinstance(message, bytes) else message.SerializeToString()


def add_content_store(servicer: ContentStoreServicer, server: Any) -> None:
    """Register ``servicer`` on ``server`` as the generated
    ``add_ContentStoreServicer_to_server`` does, except that WriteBlob messages are decoded by
    :func:`decode_write_chunk` and ReadBlob sends the messages it encoded itself."""
    captured = _CapturingServer()
    cache_pb2_grpc.add_ContentStoreServicer_to_server(servicer, captured)
    handlers = dict(captured.handlers)
    generated = handlers["WriteBlob"]
    handlers["WriteBlob"] = grpc.stream_unary_rpc_method_handler(
        servicer.WriteBlob,
        request_deserializer=decode_write_chunk,
        response_serializer=generated.response_serializer,
    )
    handlers["ReadBlob"] = grpc.unary_stream_rpc_method_handler(
        servicer.ReadBlob,
        request_deserializer=handlers["ReadBlob"].request_deserializer,
        response_serializer=_encoded,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(captured.service, handlers),)
    )
    server.add_registered_method_handlers(captured.service, handlers)


class _CapturingServer:
    """Takes the method handlers a generated registration function builds."""

    def __init__(self) -> None:
        self.service = ""
        self.handlers: dict[str, grpc.RpcMethodHandler] = {}

    def add_generic_rpc_handlers(self, generic_handlers: Any) -> None:
        pass

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        self.service, self.handlers = service, handlers
