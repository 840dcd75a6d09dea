"""Digests and the workspace hash function.

Spec coverage:
* CACHE-001 — a key is a 32-byte digest shown as 64 lowercase hex characters.
* CACHE-002 — BLAKE3 (``0x00``, default) and SHA-256 (``0x01``), one function per workspace.
Out of scope: what is fed to the hasher (``hazremote.keys``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol

from hazremote.domain.model import HashName

__all__ = ["DIGEST_SIZE", "HASH_IDS", "Digest", "Hasher", "digest_bytes", "new_hasher"]

DIGEST_SIZE = 32
#: CACHE-002: the id byte of each hash function, fed into every key (CACHE-003).
HASH_IDS: dict[HashName, int] = {HashName.BLAKE3: 0x00, HashName.SHA256: 0x01}


class Hasher(Protocol):
    def update(self, data: bytes | memoryview, /) -> object: ...
    def digest(self) -> bytes: ...


def new_hasher(hash_name: HashName) -> Hasher:
    """A fresh incremental hasher for the workspace hash function."""
    if hash_name is HashName.BLAKE3:
        import blake3

        hasher: Hasher = blake3.blake3()
        return hasher
    return hashlib.sha256()


@dataclass(frozen=True, slots=True)
class Digest:
    """A 32-byte content digest or cache key (CACHE-001)."""

    raw: bytes

    def __post_init__(self) -> None:
        if len(self.raw) != DIGEST_SIZE:
            raise ValueError(f"a digest has {DIGEST_SIZE} bytes, got {len(self.raw)}")

    @property
    def hex(self) -> str:
        return self.raw.hex()

    def __str__(self) -> str:
        return self.raw.hex()

    @classmethod
    def from_hex(cls, text: str) -> Digest:
        """Parse 64 lowercase hex characters.

        Raises:
            ValueError: when ``text`` is not exactly that.
        """
        if len(text) != 2 * DIGEST_SIZE or text != text.lower():
            raise ValueError(f"expected 64 lowercase hex characters, got {text!r}")
        return cls(bytes.fromhex(text))


def digest_bytes(hash_name: HashName, data: bytes) -> Digest:
    """Digest of an in-memory byte string."""
    hasher = new_hasher(hash_name)
    hasher.update(data)
    return Digest(hasher.digest())
