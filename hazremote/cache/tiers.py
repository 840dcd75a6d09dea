"""The cache tiers as one object: local first, the remote beyond it, with the backfill.

Spec coverage:
* CACHE-014..016 — :meth:`CacheTiers.lookup_local`: the local entry, or ``None``.
* CACHE-017, CACHE-018 — :meth:`CacheTiers.store` stores locally; a failure is a warning.
* CACHE-019..020, SEC-001 — :meth:`CacheTiers.restore`: the local rules, whatever the source.
* RC-001 — :meth:`CacheTiers.fetch_remote`: lookup and verified download beyond the local tier.
* RX-008 — :meth:`CacheTiers.fetch_executed`: a remote execution's entry, fetched like a hit.
* RC-001 — :meth:`CacheTiers.settle` hands a restored remote hit to the :class:`Backfill`.
* RC-001 — :meth:`CacheTiers.look_ahead` batches a level's remote lookups.
* RC-002 — stored results and restored local hits are uploaded in the background.
* RC-003 — any remote trouble is a miss (``None``), never an exception.
Out of scope: locks, output claims and which task is restored when (the lifecycle's), the
remote protocol (:mod:`hazremote.remote.client`).
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import shutil
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Protocol, TypeVar

from hazremote.cache.index import TaskIndex
from hazremote.cache.local import FetchedBlob, LocalCache, StoredBlob
from hazremote.cache.manifest import Manifest
from hazremote.cache.tier import ByteSink, KnownDigests, OutputFile, RestoreResult, StoreStatus
from hazremote.domain.digest import Digest
from hazremote.domain.patterns import PathPattern
from hazremote.domain.refs import TaskId
from hazremote.keys.components import EnvSource, KeyComponents

__all__ = [
    "Backfill",
    "CacheTiers",
    "Entry",
    "RemoteTier",
    "Stored",
    "Tier",
    "TieredCache",
]

_T = TypeVar("_T")
#: The run spool's directory of downloaded remote blobs (shared by every hit of the run).
_REMOTE_BLOBS = "remote-blobs"


class Tier(enum.Enum):
    LOCAL = "local"
    REMOTE = "remote"


@dataclass(frozen=True, slots=True, kw_only=True)
class Entry:
    """A cache entry a tier holds, ready to restore.

    Attributes:
        manifest: The entry's manifest.
        tier: Where it was found.
        fetched: A remote entry's downloaded blobs (in memory or as files).
        download_dir: The directory of this entry's own downloaded files, if any.
    """

    manifest: Manifest
    tier: Tier
    fetched: Mapping[Digest, FetchedBlob] | None = None
    download_dir: Path | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Stored:
    """What a store did: the manifest of this run's files (``None`` when the local store
    failed) and warnings for the user, in the order they arose."""

    manifest: Manifest | None
    warnings: tuple[str, ...] = ()


class CacheTiers(Protocol):
    """The cache as the lifecycle uses it; every trouble is a value.

    :meth:`lookup_local` and :meth:`restore` are synchronous (the lifecycle calls them on
    its key thread, in one hop with the key derivation); the rest run on the event loop.
    """

    @property
    def has_remote(self) -> bool:
        """A tier beyond the local one exists (worth a lookahead)."""
        ...

    def lookup_local(self, key: Digest, *, again: bool = False) -> Manifest | None:
        """The local entry of ``key``: what a lookahead found (once), else a lookup;
        ``again``: always a lookup (a second look, under the task's lock)."""
        ...

    def lookup_ahead(self, key: Digest) -> Manifest | None:
        """A lookahead's local lookup, kept for the probe's :meth:`lookup_local`."""
        ...

    def restore(
        self,
        entry: Entry,
        *,
        workspace_root: Path,
        output_patterns: Sequence[PathPattern],
        stdout_sink: ByteSink,
        stderr_sink: ByteSink,
        known_digests: KnownDigests | None,
    ) -> RestoreResult:
        """Write ``entry``'s outputs into the workspace and replay its streams."""
        ...

    async def fetch_remote(self, key: Digest) -> Entry | None:
        """The entry of ``key`` beyond the local tier, downloaded and verified; ``None``
        for a miss, no such tier, or any trouble."""
        ...

    async def fetch_executed(self, key: Digest, document: bytes) -> Entry | None:
        """RX-008: the entry a remote execution published (its manifest ``document``),
        downloaded and verified like a remote hit; ``None`` on any trouble."""
        ...

    async def settle(self, entry: Entry, *, restored: bool, label: str) -> None:
        """After a restore attempt: a restored local entry is shared with the remote, a
        restored remote one goes to the backfill; downloads no one needs are removed."""
        ...

    async def look_ahead(
        self, keys: Sequence[Digest], *, local_hits: Sequence[Manifest]
    ) -> Mapping[Digest, Manifest]:
        """Look ``keys`` (local misses) up remotely in a batch and start their blobs'
        download; share ``local_hits`` the remote lacks. The remote hits."""
        ...

    async def store(
        self,
        *,
        task: TaskId,
        key: Digest,
        components: KeyComponents,
        stdout: Path,
        stderr: Path,
        outputs: Sequence[OutputFile],
        duration_ms: int,
    ) -> Stored:
        """Store a success locally, then upload it in the background (RC-002)."""
        ...

    def close(self) -> list[str]:
        """Wait for the backfill and free the threads; its warnings."""
        ...


class RemoteTier(Protocol):
    """The remote cache as the tiers use it (RC-001/002); every trouble is a value.

    Its coroutines run on the run's event loop; :class:`hazremote.remote.client.RemoteCache`
    implements it.
    """

    @property
    def writes(self) -> bool:
        """True in ``read-write`` mode."""
        ...

    async def lookup(self, key: Digest) -> Manifest | None:
        """The strictly parsed remote manifest of ``key``, or ``None`` (miss or error)."""
        ...

    async def prefetch(self, keys: Sequence[Digest]) -> Mapping[Digest, Manifest]:
        """Look ``keys`` up in batches now, so that later lookups need no round trip."""
        ...

    def prefetch_blobs(self, manifests: Sequence[Manifest], dest: Path) -> None:
        """Start fetching the blobs of ``manifests`` into ``dest`` in the background."""
        ...

    async def download(self, manifest: Manifest, dest: Path) -> Mapping[Digest, FetchedBlob] | None:
        """Every blob of ``manifest``, verified (in memory or as files in ``dest``);
        ``None`` on any failure."""
        ...

    def accept_document(self, key: Digest, document: bytes) -> Manifest | None:
        """RX-008: a remote execution's manifest document of ``key``, strictly parsed
        (``None`` when refused) and kept for :meth:`take_document`."""
        ...

    def take_document(self, key: Digest) -> bytes | None:
        """The remote hit's manifest document as received (once), or ``None``."""
        ...

    def upload_later(self, *, manifest: Manifest, blobs: Sequence[StoredBlob]) -> None:
        """Upload a local entry in the background."""
        ...

    def share(
        self, manifests: Sequence[Manifest], blobs: Callable[[Manifest], Sequence[StoredBlob]]
    ) -> None:
        """In the background, upload those of these local entries the remote lacks (a no-op
        in ``read-only`` mode and for keys known to be there)."""
        ...


class Backfill(Protocol):
    """RC-001: turns restored remote hits into local entries, off the critical path
    (:class:`hazremote.cache.backfill.ProcessBackfill`)."""

    def start(self) -> None:
        """Get ready now: remote hits are coming."""
        ...

    def submit(
        self,
        *,
        label: str,
        manifest: Manifest,
        blobs: Mapping[Digest, FetchedBlob],
        cleanup: Path | None,
        document: bytes | None = None,
    ) -> None:
        """Import ``manifest`` (whose received ``document`` it may pass on as it is) with
        its fetched ``blobs``; remove ``cleanup`` afterwards."""
        ...

    def close(self) -> list[str]:
        """Wait for every import; the warnings."""
        ...


class TieredCache:
    """:class:`CacheTiers` over the local cache, an optional remote tier and the backfill.

    Args:
        local: The local tier.
        index: Where stored task keys are recorded for ``haz why`` (``None``: nowhere).
        remote: The remote tier, if any.
        backfill: Imports restored remote hits locally.
        spool_dir: The run's spool directory (downloads go below it).
        producer: Who stores local entries (``user@host``).
    """

    def __init__(
        self,
        *,
        local: LocalCache,
        index: TaskIndex | None,
        remote: RemoteTier | None,
        backfill: Backfill,
        spool_dir: Path,
        producer: str,
    ) -> None:
        self._local = local
        self._index = index
        self._remote = remote
        self._backfill = backfill
        self._spool_dir = spool_dir
        self._producer = producer
        self._io_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="haz-cache")
        #: Local lookups done by :meth:`lookup_ahead` (the manifest, or ``None`` for a miss),
        #: each handed to :meth:`lookup_local` once.
        self._looked_up: dict[Digest, Manifest | None] = {}
        self._hits = itertools.count()  # names the spool directories of remote hits

    @property
    def has_remote(self) -> bool:
        return self._remote is not None

    async def _on_pool(self, fn: Callable[[], _T]) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._io_pool, fn)

    def lookup_local(self, key: Digest, *, again: bool = False) -> Manifest | None:
        if not again and key in self._looked_up:
            return self._looked_up.pop(key)
        return self._local.lookup(key).manifest

    def lookup_ahead(self, key: Digest) -> Manifest | None:
        # the probe of ``key`` gets the answer without a second lookup or parse
        manifest = self._local.lookup(key).manifest
        self._looked_up[key] = manifest
        return manifest

    def restore(
        self,
        entry: Entry,
        *,
        workspace_root: Path,
        output_patterns: Sequence[PathPattern],
        stdout_sink: ByteSink,
        stderr_sink: ByteSink,
        known_digests: KnownDigests | None,
    ) -> RestoreResult:
        return self._local.restore(
            entry.manifest,
            workspace_root=workspace_root,
            output_patterns=output_patterns,
            stdout_sink=stdout_sink,
            stderr_sink=stderr_sink,
            known_digests=known_digests,
            fetched=entry.fetched,
        )

    async def fetch_remote(self, key: Digest) -> Entry | None:
        """Blob files not prefetched go to a directory of this hit, created only if there
        are any and removed after the backfill (or at once when not restored)."""
        remote = self._remote
        if remote is None:
            return None
        manifest = await remote.lookup(key)
        if manifest is None:
            return None
        return await self._download(remote, manifest)

    async def fetch_executed(self, key: Digest, document: bytes) -> Entry | None:
        remote = self._remote
        if remote is None:
            return None
        manifest = remote.accept_document(key, document)
        if manifest is None:
            return None
        return await self._download(remote, manifest)

    async def _download(self, remote: RemoteTier, manifest: Manifest) -> Entry | None:
        own_dir = self._spool_dir / f"remote-{next(self._hits)}"
        blobs = await remote.download(manifest, own_dir)
        if blobs is None:
            await self._on_pool(partial(shutil.rmtree, own_dir, ignore_errors=True))
            return None
        return Entry(manifest=manifest, tier=Tier.REMOTE, fetched=blobs, download_dir=own_dir)

    async def settle(self, entry: Entry, *, restored: bool, label: str) -> None:
        remote = self._remote
        if entry.tier is Tier.LOCAL:
            if restored and remote is not None and remote.writes:
                remote.share([entry.manifest], self._local.stored_blobs)  # once per key
            return
        blobs = entry.fetched or {}
        own_dir = entry.download_dir
        owns = own_dir is not None and any(
            isinstance(blob, Path) and blob.parent == own_dir for blob in blobs.values()
        )
        if restored and remote is not None:
            self._backfill.submit(
                label=label,
                manifest=entry.manifest,
                blobs=blobs,
                cleanup=own_dir if owns else None,
                document=remote.take_document(entry.manifest.key),
            )
        elif owns and own_dir is not None:
            await self._on_pool(partial(shutil.rmtree, own_dir, ignore_errors=True))

    async def look_ahead(
        self, keys: Sequence[Digest], *, local_hits: Sequence[Manifest]
    ) -> Mapping[Digest, Manifest]:
        remote = self._remote
        if remote is None:
            return {}
        if remote.writes and local_hits:  # RC-002: local hits the remote lacks are uploaded
            remote.share(local_hits, self._local.stored_blobs)
        if not keys:
            return {}
        # Remote hits are likely: the backfill process starts while they are looked up, so
        # its start-up (~0.1 s) is not waited for at the end of a short run.
        self._backfill.start()
        hits = await remote.prefetch(keys)
        if hits:
            blobs_dir = self._spool_dir / _REMOTE_BLOBS
            blobs_dir.mkdir(exist_ok=True)
            remote.prefetch_blobs(list(hits.values()), blobs_dir)
        return hits

    async def store(
        self,
        *,
        task: TaskId,
        key: Digest,
        components: KeyComponents,
        stdout: Path,
        stderr: Path,
        outputs: Sequence[OutputFile],
        duration_ms: int,
    ) -> Stored:
        result = await self._on_pool(
            partial(
                self._local.store,
                key=key,
                components=components,
                stdout=stdout,
                stderr=stderr,
                outputs=outputs,
                duration_ms=duration_ms,
                producer=self._producer,
            )
        )
        if result.status is StoreStatus.FAILED:
            return Stored(manifest=None, warnings=(f"{task}: result not cached: {result.warning}",))
        if self._remote is not None and self._remote.writes:
            entry = result.manifest if result.status is StoreStatus.STORED else None
            if entry is None:  # another run's entry is the one in place: upload that one
                entry = (await self._on_pool(partial(self._local.lookup, key))).manifest
            if entry is not None:
                self._remote.upload_later(manifest=entry, blobs=self._local.stored_blobs(entry))
        warnings: tuple[str, ...] = ()
        if self._index is not None:
            env_values = {
                e.name: (None if e.source is EnvSource.UNSET else e.value) for e in components.env
            }
            warning = await self._on_pool(
                partial(self._index.record_task_key, task, key, env_values)
            )
            if warning is not None:
                warnings = (warning,)
        return Stored(manifest=result.manifest, warnings=warnings)

    def close(self) -> list[str]:
        self._io_pool.shutdown(wait=True)
        return self._backfill.close()
