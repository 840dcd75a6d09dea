"""Conversions between wire messages and domain values, at the edge (STYLE: protobuf types
never leak into domain code).

Spec coverage:
* RC-004 — a digest is 32 raw bytes plus a non-negative size; anything else is
  ``INVALID_ARGUMENT`` (raised as :class:`InvalidRequestError`).
* CACHE-002 — the wire ``HashFunction`` values are the hash ids of ``HASH_IDS``.
* RC-006 — the wire ``Compression`` enum maps onto the manifest's :class:`Compression`.
Out of scope: the meaning of any request.
"""

from __future__ import annotations

from collections.abc import Iterable

from cache_service.errors import InvalidRequestError
from cache_service.storage.base import BlobRef
from hazremote.cache.manifest import Compression
from hazremote.domain.digest import DIGEST_SIZE, HASH_IDS, Digest
from hazremote.domain.model import HashName
from hazremote.wire.haz.remote.v1 import cache_pb2, digest_pb2

__all__ = [
    "WIRE_ENCODINGS",
    "accepted_encodings",
    "blob_ref",
    "digest_message",
    "encoding_of",
    "hash_name",
    "key_digest",
    "wire_compression",
]

_BY_ID: dict[int, HashName] = {number: name for name, number in HASH_IDS.items()}

WIRE_ENCODINGS: dict[cache_pb2.Compression, Compression] = {
    cache_pb2.COMPRESSION_IDENTITY: Compression.NONE,
    cache_pb2.COMPRESSION_ZSTD: Compression.ZSTD,
}
_TO_WIRE: dict[Compression, cache_pb2.Compression] = {v: k for k, v in WIRE_ENCODINGS.items()}


def hash_name(value: int) -> HashName:
    try:
        return _BY_ID[value]
    except KeyError:
        raise InvalidRequestError(f"unknown hash function {value}") from None


def _digest(raw: bytes, what: str) -> Digest:
    if len(raw) != DIGEST_SIZE:
        raise InvalidRequestError(f"{what} has {len(raw)} bytes; a digest has {DIGEST_SIZE}")
    return Digest(raw)


def blob_ref(hash_function: int, message: digest_pb2.Digest) -> BlobRef:
    """A wire digest as a :class:`BlobRef`, validated."""
    if message.size_bytes < 0:
        raise InvalidRequestError(f"digest size {message.size_bytes} is negative")
    return BlobRef(
        hash_name=hash_name(hash_function),
        digest=_digest(message.hash, "digest"),
        size=message.size_bytes,
    )


def key_digest(raw: bytes) -> Digest:
    if len(raw) != DIGEST_SIZE:  # every lookup: not through _digest (issue 5)
        raise InvalidRequestError(f"cache key has {len(raw)} bytes; a digest has {DIGEST_SIZE}")
    return Digest(raw)


def digest_message(ref: BlobRef) -> digest_pb2.Digest:
    return digest_pb2.Digest(hash=ref.digest.raw, size_bytes=ref.size)


def encoding_of(value: int) -> Compression:
    encoding: Compression | None = WIRE_ENCODINGS.get(value)  # type: ignore[call-overload]
    if encoding is None:
        raise InvalidRequestError(f"unknown compression {value}")
    return encoding


def accepted_encodings(values: Iterable[int]) -> list[Compression]:
    """The client's accepted compressions (unknown ones ignored; empty: identity only)."""
    known = [WIRE_ENCODINGS.get(v) for v in values]  # type: ignore[call-overload]
    return [e for e in known if e is not None] or [Compression.NONE]


def wire_compression(encoding: Compression) -> cache_pb2.Compression:
    return _TO_WIRE[encoding]
