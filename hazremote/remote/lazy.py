"""The remote tier of a run, created on first use.

Spec coverage:
* RC-001, RC-003 — :class:`LazyRemote` builds the remote tier (and imports gRPC) on first need.
* RC-002 — in ``read-write`` mode local hits are shared unless known there (:mod:`.known`).
Out of scope: talking to the service (:mod:`.client`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from hazremote.cache.local import FetchedBlob, StoredBlob
from hazremote.cache.manifest import Manifest
from hazremote.domain.digest import Digest
from hazremote.domain.model import HashName
from hazremote.remote.known import KnownRemoteKeys
from hazremote.remote.settings import RemoteConfig

if TYPE_CHECKING:
    from hazremote.remote.client import RemoteCache

__all__ = ["LazyRemote"]


class LazyRemote:
    """Implements :class:`hazremote.cache.tiers.RemoteTier` and what ``haz run`` asks at the end."""

    def __init__(
        self,
        config: RemoteConfig,
        *,
        hash_name: HashName,
        chapter_revision: int,
        known: KnownRemoteKeys | None = None,
    ) -> None:
        if config.tls is not None:
            config.tls.credentials_bytes()  # SEC-005: unreadable TLS files fail the run at once
        self._config = config
        self._known = known
        self._hash_name = hash_name
        self._revision = chapter_revision
        self._client: RemoteCache | None = None

    def _remote(self) -> RemoteCache:
        if self._client is None:
            from hazremote.remote.client import RemoteCache

            self._client = RemoteCache(
                self._config,
                hash_name=self._hash_name,
                chapter_revision=self._revision,
                on_confirmed=None if self._known is None else self._known.add,
            )
        return self._client

    @property
    def writes(self) -> bool:
        return self._config.writes

    async def lookup(self, key: Digest) -> Manifest | None:
        return await self._remote().lookup(key)

    async def prefetch(self, keys: Sequence[Digest]) -> Mapping[Digest, Manifest]:
        if not keys:
            return {}
        return await self._remote().prefetch(keys)

    def prefetch_blobs(self, manifests: Sequence[Manifest], dest: Path) -> None:
        if manifests:
            self._remote().prefetch_blobs(manifests, dest)

    async def download(self, manifest: Manifest, dest: Path) -> Mapping[Digest, FetchedBlob] | None:
        return await self._remote().download(manifest, dest)

    def accept_document(self, key: Digest, document: bytes) -> Manifest | None:
        return self._remote().accept_document(key, document)

    def take_document(self, key: Digest) -> bytes | None:
        return None if self._client is None else self._client.take_document(key)

    def upload_later(self, *, manifest: Manifest, blobs: Sequence[StoredBlob]) -> None:
        self._remote().upload_later(manifest=manifest, blobs=blobs)

    def share(
        self, manifests: Sequence[Manifest], blobs: Callable[[Manifest], Sequence[StoredBlob]]
    ) -> None:
        """RC-002: upload the local hits the remote lacks; keys known to be there cost
        nothing (not even the gRPC import)."""
        if not self._config.writes:
            return
        known = self._known
        wanted = [m for m in manifests if known is None or m.key not in known]
        if wanted:
            self._remote().share(wanted, blobs)

    async def drain(self, *, progress: Callable[[int], None] | None = None) -> int:
        """RC-002: wait for pending uploads (none when the client was never needed)."""
        if self._client is None:
            return 0
        return await self._client.drain(progress=progress)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
        if self._known is not None:
            self._known.save()

    def warning(self) -> str | None:
        """RC-003: the run's one remote warning, if any."""
        return None if self._client is None else self._client.warning()
