"""The tiered cache: the real local cache, hand-written fakes of RemoteTier and Backfill.

Spec coverage: CACHE-014/017 (local lookup and store through the tiers), RC-001 (the
lookahead's memo, remote fetch, backfill of a restored remote hit, downloads removed when
not restored), RC-002 (uploads in ``read-write`` mode only, local hits shared), RC-003 (a
failed download is a miss).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hazremote.cache.local import FetchedBlob, StoredBlob
from hazremote.cache.manifest import Manifest
from hazremote.cache.tier import OutputFile
from hazremote.cache.tiers import Entry, Tier, TieredCache
from hazremote.domain.digest import Digest
from hazremote.domain.refs import TaskId
from tests.cache.cachekit import Env, components, make_key


@dataclass
class FakeRemote:
    """A RemoteTier over a dict; ``download`` writes one file into ``dest`` (or fails)."""

    writes: bool = True
    entries: dict[Digest, Manifest] = field(default_factory=dict)
    download_fails: bool = False
    uploads: list[Digest] = field(default_factory=list)
    shared: list[Digest] = field(default_factory=list)
    prefetched_blobs: list[Path] = field(default_factory=list)

    async def lookup(self, key: Digest) -> Manifest | None:
        return self.entries.get(key)

    async def prefetch(self, keys: Sequence[Digest]) -> Mapping[Digest, Manifest]:
        return {k: self.entries[k] for k in keys if k in self.entries}

    def prefetch_blobs(self, manifests: Sequence[Manifest], dest: Path) -> None:
        self.prefetched_blobs.append(dest)

    async def download(self, manifest: Manifest, dest: Path) -> Mapping[Digest, FetchedBlob] | None:
        dest.mkdir(parents=True, exist_ok=True)
        (dest / "blob").write_bytes(b"x")
        if self.download_fails:
            return None
        return {manifest.stdout.hash: dest / "blob"}

    def accept_document(self, key: Digest, document: bytes) -> Manifest | None:
        return self.entries.get(key)

    def take_document(self, key: Digest) -> bytes | None:
        return b"{}"

    def upload_later(self, *, manifest: Manifest, blobs: Sequence[StoredBlob]) -> None:
        self.uploads.append(manifest.key)

    def share(
        self, manifests: Sequence[Manifest], blobs: Callable[[Manifest], Sequence[StoredBlob]]
    ) -> None:
        self.shared.extend(m.key for m in manifests)


@dataclass
class FakeBackfill:
    started: int = 0
    submitted: list[tuple[Digest, Path | None, bytes | None]] = field(default_factory=list)

    def start(self) -> None:
        self.started += 1

    def submit(
        self,
        *,
        label: str,
        manifest: Manifest,
        blobs: Mapping[Digest, FetchedBlob],
        cleanup: Path | None,
        document: bytes | None = None,
    ) -> None:
        self.submitted.append((manifest.key, cleanup, document))

    def close(self) -> list[str]:
        return ["backfill warning"]


def tiers_of(env: Env, remote: FakeRemote | None, backfill: FakeBackfill) -> TieredCache:
    spool = env.tmp / "run"
    spool.mkdir(exist_ok=True)
    return TieredCache(
        local=env.cache,
        index=None,
        remote=remote,
        backfill=backfill,
        spool_dir=spool,
        producer="test@host",
    )


def store(env: Env, tiers: TieredCache, label: str) -> Manifest | None:
    key = make_key(label)
    source = env.write("/dist/a.txt", b"a")
    stored = asyncio.run(
        tiers.store(
            task=TaskId("app", "build"),
            key=key,
            components=components(),
            stdout=env.spool(f"{label}.out", b"out"),
            stderr=env.spool(f"{label}.err", b""),
            outputs=[OutputFile(path="/dist/a.txt", source=source)],
            duration_ms=1,
        )
    )
    assert stored.warnings == ()
    return stored.manifest


def test_a_store_is_found_locally_and_uploaded_in_read_write_mode(env: Env) -> None:
    """CACHE-017, RC-002: stored locally, then handed to the remote for upload."""
    remote = FakeRemote()
    tiers = tiers_of(env, remote, FakeBackfill())
    manifest = store(env, tiers, "k")
    assert manifest is not None
    assert tiers.lookup_local(make_key("k")) == manifest
    assert remote.uploads == [make_key("k")]
    assert tiers.close() == ["backfill warning"]


def test_a_read_only_remote_gets_no_upload(env: Env) -> None:
    remote = FakeRemote(writes=False)
    tiers = tiers_of(env, remote, FakeBackfill())
    assert store(env, tiers, "k") is not None
    assert remote.uploads == []
    tiers.close()


def test_the_lookaheads_answer_is_used_once(env: Env) -> None:
    """RC-001: the probe gets the lookahead's local answer (even if stale), once; a second
    look under the task lock (``again``) always asks the cache."""
    tiers = tiers_of(env, None, FakeBackfill())
    key = make_key("k")
    assert tiers.lookup_ahead(key) is None
    manifest = store(env, tiers, "k")
    assert tiers.lookup_local(key, again=True) == manifest  # the memo is not consumed
    assert tiers.lookup_local(key) is None  # what the lookahead found
    assert tiers.lookup_local(key) == manifest
    tiers.close()


def test_without_a_remote_nothing_is_fetched(env: Env) -> None:
    tiers = tiers_of(env, None, FakeBackfill())
    assert not tiers.has_remote
    assert asyncio.run(tiers.fetch_remote(make_key("k"))) is None
    tiers.close()


def test_a_restored_remote_hit_goes_to_the_backfill(env: Env) -> None:
    """RC-001: the restored entry, its download directory and its document are submitted."""
    remote, backfill = FakeRemote(), FakeBackfill()
    source = tiers_of(env, None, FakeBackfill())
    manifest = store(env, source, "k")
    assert manifest is not None
    remote.entries[manifest.key] = manifest
    tiers = tiers_of(env, remote, backfill)
    entry = asyncio.run(tiers.fetch_remote(manifest.key))
    assert entry is not None
    assert entry.tier is Tier.REMOTE
    asyncio.run(tiers.settle(entry, restored=True, label="app:build"))
    assert backfill.submitted == [(manifest.key, entry.download_dir, b"{}")]
    tiers.close()


def test_downloads_of_an_unrestored_or_failed_remote_hit_are_removed(env: Env) -> None:
    """RC-001/003: nothing of a hit that was not restored stays behind; a failed download
    is a miss."""
    remote, backfill = FakeRemote(), FakeBackfill()
    source = tiers_of(env, None, FakeBackfill())
    manifest = store(env, source, "k")
    assert manifest is not None
    remote.entries[manifest.key] = manifest
    tiers = tiers_of(env, remote, backfill)
    entry = asyncio.run(tiers.fetch_remote(manifest.key))
    assert entry is not None
    assert entry.download_dir is not None
    assert entry.download_dir.exists()
    asyncio.run(tiers.settle(entry, restored=False, label="app:build"))
    assert not entry.download_dir.exists()
    assert backfill.submitted == []
    remote.download_fails = True
    assert asyncio.run(tiers.fetch_remote(manifest.key)) is None
    assert [p.name for p in (env.tmp / "run").iterdir()] == []
    tiers.close()


def test_a_local_hit_is_shared_and_the_lookahead_prefetches(env: Env) -> None:
    """RC-002: a restored local hit is offered to the remote; the lookahead shares local
    hits, starts the backfill and prefetches the blobs of remote hits."""
    remote, backfill = FakeRemote(), FakeBackfill()
    tiers = tiers_of(env, remote, backfill)
    manifest = store(env, tiers, "k")
    assert manifest is not None
    asyncio.run(tiers.settle(Entry(manifest=manifest, tier=Tier.LOCAL), restored=True, label="t"))
    assert remote.shared == [manifest.key]
    remote.entries[make_key("r")] = manifest
    hits = asyncio.run(tiers.look_ahead([make_key("r"), make_key("m")], local_hits=[manifest]))
    assert list(hits) == [make_key("r")]
    assert remote.shared == [manifest.key, manifest.key]
    assert backfill.started == 1
    assert remote.prefetched_blobs == [env.tmp / "run" / "remote-blobs"]
    tiers.close()
