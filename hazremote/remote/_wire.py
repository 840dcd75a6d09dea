"""Conversions between domain values and the generated ``haz.remote.v1`` messages.

Generated types never leave this package (convert at the edge).

Spec coverage:
* RC-004 — digests travel as raw 32 bytes plus the uncompressed size.
* CACHE-002 — the hash function is the workspace's.
* RC-006 — the wire ``Compression`` enum.
Out of scope: the calls themselves (:mod:`.client`).
"""

from __future__ import annotations

from typing import Any

from hazremote.domain.digest import DIGEST_SIZE, Digest
from hazremote.domain.model import HashName
from hazremote.wire.haz.remote.v1 import cache_pb2, digest_pb2

__all__ = [
    "GRPC_ALREADY_EXISTS",
    "GRPC_OK",
    "WIRE_IDENTITY",
    "WIRE_ZSTD",
    "digest_from_wire",
    "digest_to_wire",
    "hash_function",
]

GRPC_OK = 0
GRPC_ALREADY_EXISTS = 6
WIRE_IDENTITY: Any = cache_pb2.COMPRESSION_IDENTITY
WIRE_ZSTD: Any = cache_pb2.COMPRESSION_ZSTD

_HASH_FUNCTIONS: dict[HashName, Any] = {
    HashName.BLAKE3: digest_pb2.HASH_FUNCTION_BLAKE3,
    HashName.SHA256: digest_pb2.HASH_FUNCTION_SHA256,
}


def hash_function(name: HashName) -> Any:
    return _HASH_FUNCTIONS[name]


def digest_to_wire(digest: Digest, size: int) -> Any:
    return digest_pb2.Digest(hash=digest.raw, size_bytes=size)


def digest_from_wire(message: Any) -> tuple[Digest, int] | None:
    """``None`` for a malformed digest (wrong length, negative size)."""
    raw = bytes(message.hash)
    if len(raw) != DIGEST_SIZE or message.size_bytes < 0:
        return None
    return Digest(raw), int(message.size_bytes)
