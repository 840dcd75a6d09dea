"""A manifest store fake shared by the lookup tests (the ``ManifestStore`` port, over memory)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from cache_service.storage.base import WOULD_BLOCK, ManifestInfo, WouldBlock
from cache_service.storage.memory import MemoryManifestStore
from hazremote.domain.digest import Digest
from hazremote.domain.model import HashName

__all__ = ["RecordingManifests"]


@dataclass
class RecordingManifests:
    """A ManifestStore over memory that records which thread each read ran on; with
    ``blocks`` its fast path always answers WOULD_BLOCK (like S3)."""

    blocks: bool = False
    inner: MemoryManifestStore = field(default_factory=MemoryManifestStore)
    get_threads: list[int] = field(default_factory=list)
    nowait_threads: list[int] = field(default_factory=list)

    def get(self, namespace: str, hash_name: HashName, key: Digest) -> bytes | None:
        self.get_threads.append(threading.get_ident())
        return self.inner.get(namespace, hash_name, key)

    def get_nowait(
        self, namespace: str, hash_name: HashName, key: Digest
    ) -> bytes | Literal[WouldBlock.WOULD_BLOCK] | None:
        self.nowait_threads.append(threading.get_ident())
        if self.blocks:
            return WOULD_BLOCK
        return self.inner.get(namespace, hash_name, key)

    def put_if_absent(
        self, namespace: str, hash_name: HashName, key: Digest, document: bytes
    ) -> bool:
        return self.inner.put_if_absent(namespace, hash_name, key, document)

    def replace(self, namespace: str, hash_name: HashName, key: Digest, document: bytes) -> None:
        self.inner.replace(namespace, hash_name, key, document)

    def delete(self, namespace: str, hash_name: HashName, key: Digest) -> None:
        self.inner.delete(namespace, hash_name, key)

    def iterate(self, namespace: str | None = None) -> Iterator[ManifestInfo]:
        return self.inner.iterate(namespace)
