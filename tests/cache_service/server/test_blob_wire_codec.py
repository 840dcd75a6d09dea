"""The ContentStore's own message codecs (issue 5): WriteBlob messages decoded with ``data`` as
a view of the received bytes, ReadBlob messages encoded in the storage thread with one copy —
both meaning exactly what protobuf means, on a real server too."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import cast

import pytest
from google.protobuf.message import DecodeError
from hypothesis import given, settings
from hypothesis import strategies as st

from cache_service.servicers.chunk_codec import decode_write_chunk, encode_read_chunks
from hazremote.wire.haz.remote.v1 import cache_pb2, digest_pb2
from tests.cache_service.server.serverkit import (
    BLAKE3,
    IDENTITY,
    ZSTD,
    ServerThread,
    digest_of,
    running_server,
)

WRITE_BLOB = "/haz.remote.v1.ContentStore/WriteBlob"


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, wire_type: int, payload: bytes) -> bytes:
    return _varint(number << 3 | wire_type) + payload


def _data_field(data: bytes) -> bytes:
    return _field(4, 2, _varint(len(data)) + data)


#: Encoded top-level fields of a WriteBlobChunk as any sender may put them: the known fields
#: (again and in any order: protobuf takes the last scalar and merges messages), fields this
#: version does not know, and ``data`` with a mismatched wire type (an unknown field then).
_FIELDS = st.one_of(
    st.integers(0, 3).map(lambda v: _field(1, 0, _varint(v))),
    st.builds(
        lambda h, s: _field(2, 2, _varint(len(m := _digest(h, s))) + m),
        st.binary(max_size=40),
        st.integers(-5, 1 << 40),
    ),
    st.integers(0, 2).map(lambda v: _field(3, 0, _varint(v))),
    st.binary(max_size=300).map(_data_field),
    st.binary(max_size=30).map(lambda d: b"\xa2\x80\x00" + _varint(len(d)) + d),  # long key
    st.integers(0, 1).map(lambda v: _field(5, 0, _varint(v))),
    st.integers(0, 1 << 63).map(lambda v: _field(4, 0, _varint(v))),
    st.builds(lambda n, v: _field(n, 0, _varint(v)), st.integers(6, 5000), st.integers(0, 1 << 63)),
    st.builds(
        lambda n, b: _field(n, 1, b), st.integers(6, 5000), st.binary(min_size=8, max_size=8)
    ),
    st.builds(
        lambda n, b: _field(n, 5, b), st.integers(6, 5000), st.binary(min_size=4, max_size=4)
    ),
    st.builds(
        lambda n, b: _field(n, 2, _varint(len(b)) + b), st.integers(6, 5000), st.binary(max_size=50)
    ),
)


def _digest(hash_bytes: bytes, size: int) -> bytes:
    return cast(bytes, digest_pb2.Digest(hash=hash_bytes, size_bytes=size).SerializeToString())


def _assert_same(raw: bytes) -> None:
    expected = cache_pb2.WriteBlobChunk.FromString(raw)
    got = decode_write_chunk(raw)
    assert got.hash_function == expected.hash_function
    assert got.digest == expected.digest
    assert got.compression == expected.compression
    assert got.finish == expected.finish
    assert bytes(got.data) == expected.data


@settings(max_examples=300, deadline=None)
@given(st.lists(_FIELDS, max_size=8))
def test_decoded_write_chunk_means_what_protobuf_reads(fields: list[bytes]) -> None:
    """Any valid encoding (repeated, reordered and unknown fields included) decodes to the
    values protobuf decodes."""
    _assert_same(b"".join(fields))


def test_write_chunk_data_is_a_view_of_the_received_message() -> None:
    """The 1 MiB ``data`` of a message is not copied: it is a view of the received bytes."""
    payload = bytes(range(256)) * 4096
    raw = cache_pb2.WriteBlobChunk(
        hash_function=BLAKE3, digest=digest_of(payload), data=payload, finish=True
    ).SerializeToString()
    chunk = decode_write_chunk(raw)
    assert isinstance(chunk.data, memoryview)
    assert chunk.data.obj is raw
    assert chunk.data == payload
    assert (chunk.hash_function, chunk.finish) == (BLAKE3, True)
    assert chunk.digest == digest_of(payload)


@pytest.mark.parametrize(
    "raw",
    [
        _field(4, 2, _varint(10) + b"short"),  # data longer than the message
        _field(6, 3, b""),  # a group (start)
        _field(6, 4, b""),  # a group (end)
        b"\x22",  # a key without its length
        b"\xff" * 11,  # a varint of more than 10 bytes
        _field(2, 2, _varint(3) + b"\xff\xff\xff"),  # a digest that is no message
        _field(6, 1, b"1234"),  # a fixed64 cut short
    ],
)
def test_malformed_write_chunk_is_a_decode_error_as_in_protobuf(raw: bytes) -> None:
    with pytest.raises(DecodeError):
        cache_pb2.WriteBlobChunk.FromString(raw)
    with pytest.raises(DecodeError):
        decode_write_chunk(raw)


@pytest.mark.parametrize("compression", [IDENTITY, ZSTD])
@pytest.mark.parametrize(
    "chunks", [[], [b""], [b"a"], [b"x" * 200, b"", b"y" * 70_000, b"z"], [bytes(1 << 20)]]
)
def test_encoded_read_chunks_are_what_protobuf_serializes(
    compression: cache_pb2.Compression, chunks: list[bytes]
) -> None:
    """``compression`` on the first message (alone for an empty remainder), one message per
    non-empty chunk, byte for byte protobuf's encoding."""
    expected = [
        cache_pb2.ReadBlobChunk(data=chunk).SerializeToString() for chunk in chunks if chunk
    ] or [b""]
    expected[0] = cache_pb2.ReadBlobChunk(
        compression=compression, data=next((c for c in chunks if c), b"")
    ).SerializeToString()
    assert list(encode_read_chunks(compression, (c for c in chunks))) == expected


def test_closing_the_encoded_stream_closes_the_chunks() -> None:
    """Closing the messages early (the client went away) releases the stored data at once."""
    closed: list[bool] = []

    def chunks() -> Generator[bytes, None, None]:
        try:
            yield b"one"
            yield b"two"
        finally:
            closed.append(True)

    messages = encode_read_chunks(ZSTD, chunks())
    next(messages)
    messages.close()
    assert closed == [True]


@pytest.fixture
def server() -> Iterator[ServerThread]:
    with running_server() as s:
        yield s


def test_served_write_blob_reads_messages_as_protobuf_does(server: ServerThread) -> None:
    """Through a real server: a client's messages with unknown fields, the identity spread
    over fields in any order and ``data`` sent twice (the last counts) store the blob."""
    data = b"payload of the served blob " * 1000
    first = b"".join(
        [
            _field(99, 2, _varint(3) + b"new"),  # a field of a later version
            _data_field(b"replaced by the next data field"),
            _field(1, 0, _varint(BLAKE3)),
            _data_field(data[:5000]),
            _field(2, 2, _varint(len(d := digest_of(data).SerializeToString())) + d),
        ]
    )
    last = _data_field(data[5000:]) + _field(5, 0, b"\x01") + _field(100, 0, b"\x07")
    write = server.channel.stream_unary(
        WRITE_BLOB,
        request_serializer=lambda raw: raw,
        response_deserializer=cache_pb2.WriteBlobResponse.FromString,
    )
    reply = write(iter([first, last]))
    assert reply.committed_size_bytes == len(data)
    read = list(
        server.content().ReadBlob(
            cache_pb2.ReadBlobRequest(
                hash_function=BLAKE3,
                digest=digest_of(data),
                accepted_compressions=[IDENTITY],
            )
        )
    )
    assert b"".join(m.data for m in read) == data
    assert read[0].compression == IDENTITY
