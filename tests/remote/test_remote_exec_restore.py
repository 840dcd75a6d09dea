"""A remote execution's result restores through the remote-hit path, identical to a local run.

The "worker" is a second workspace and local cache that stored the task's result (as a
worker publishes it); the client's real :class:`TieredCache` takes the published document,
downloads the blobs through a hand-written RemoteTier and restores them.

Spec coverage: RX-008 / CACHE-023 — outputs (bytes and modes) and streams identical to the
run that produced them; the entry goes to the backfill with the document as received.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hazremote.cache import LocalCache
from hazremote.cache.local import FetchedBlob, StoredBlob
from hazremote.cache.manifest import Manifest, parse_manifest
from hazremote.cache.tiers import Tier, TieredCache
from hazremote.domain.digest import Digest
from tests.cache.cachekit import HASH, REVISION, Env, FakeClock, make_key, patterns


@dataclass
class PublishedRemote:
    """A RemoteTier holding what the worker uploaded: blob files by digest."""

    blobs: dict[Digest, Path]
    writes: bool = True
    accepted: dict[Digest, bytes] = field(default_factory=dict)

    async def lookup(self, key: Digest) -> Manifest | None:
        return None

    async def prefetch(self, keys: Sequence[Digest]) -> Mapping[Digest, Manifest]:
        return {}

    def prefetch_blobs(self, manifests: Sequence[Manifest], dest: Path) -> None:
        pass

    async def download(self, manifest: Manifest, dest: Path) -> Mapping[Digest, FetchedBlob] | None:
        wanted = [manifest.stdout.hash, manifest.stderr.hash, *(o.hash for o in manifest.outputs)]
        return {d: self.blobs[d] for d in wanted}

    def accept_document(self, key: Digest, document: bytes) -> Manifest | None:
        manifest = parse_manifest(document, chapter_revision=REVISION, hash_name=HASH)
        if manifest.key != key:
            return None
        self.accepted[key] = document
        return manifest

    def take_document(self, key: Digest) -> bytes | None:
        return self.accepted.pop(key, None)

    def upload_later(self, *, manifest: Manifest, blobs: Sequence[StoredBlob]) -> None:
        raise AssertionError("a remote execution's result is already remote")

    def share(
        self, manifests: Sequence[Manifest], blobs: Callable[[Manifest], Sequence[StoredBlob]]
    ) -> None:
        raise AssertionError("nothing local to share")


@dataclass
class Backfill:
    documents: list[bytes | None] = field(default_factory=list)

    def start(self) -> None:
        pass

    def submit(
        self,
        *,
        label: str,
        manifest: Manifest,
        blobs: Mapping[Digest, FetchedBlob],
        cleanup: Path | None,
        document: bytes | None = None,
    ) -> None:
        self.documents.append(document)

    def close(self) -> list[str]:
        return []


def make_env(root: Path) -> Env:
    clock = FakeClock()
    (root / "ws").mkdir(parents=True)
    cache = LocalCache(root / "cache", hash_name=HASH, chapter_revision=REVISION, clock=clock)
    return Env(tmp=root, workspace=root / "ws", cache=cache, clock=clock)


def files_of(root: Path) -> dict[str, tuple[int, bytes]]:
    found: dict[str, tuple[int, bytes]] = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            found[str(path.relative_to(root))] = (
                stat.S_IMODE(path.stat().st_mode),
                path.read_bytes(),
            )
    return found


def test_a_published_result_restores_identically_to_the_run_that_produced_it(
    tmp_path: Path,
) -> None:
    worker = make_env(tmp_path / "worker")
    key = make_key("remote-exec")
    files = {"/dist/a.txt": b"alpha\n", "/dist/bin/run": b"#!/bin/sh\necho\n"}
    result = worker.store(
        key, files, stdout=b"out\n", stderr=b"err\n", modes={"/dist/bin/run": 0o755}
    )
    manifest = result.manifest
    assert manifest is not None
    blobs = {o.hash: worker.workspace / o.path[1:] for o in manifest.outputs}
    blobs[manifest.stdout.hash] = worker.spool("s.out", b"out\n")
    blobs[manifest.stderr.hash] = worker.spool("s.err", b"err\n")
    document = manifest.to_json()

    client = make_env(tmp_path / "client")
    backfill = Backfill()
    (tmp_path / "run").mkdir()
    tiers = TieredCache(
        local=client.cache,
        index=None,
        remote=PublishedRemote(blobs=blobs),
        backfill=backfill,
        spool_dir=tmp_path / "run",
        producer="client@host",
    )

    async def restore() -> tuple[bool, bytes, bytes]:
        entry = await tiers.fetch_executed(key, document)
        assert entry is not None
        assert entry.tier is Tier.REMOTE
        out: list[bytes] = []
        err: list[bytes] = []
        restored = tiers.restore(
            entry,
            workspace_root=client.workspace,
            output_patterns=patterns("/dist/**"),
            stdout_sink=out.append,
            stderr_sink=err.append,
            known_digests=None,
        )
        await tiers.settle(entry, restored=restored.ok, label="app:build")
        return restored.ok, b"".join(out), b"".join(err)

    ok, out, err = asyncio.run(restore())
    tiers.close()
    assert ok
    assert (out, err) == (b"out\n", b"err\n")
    assert files_of(client.workspace / "dist") == files_of(worker.workspace / "dist")
    assert files_of(client.workspace / "dist")["bin/run"][0] == 0o755
    assert backfill.documents == [document]


def test_a_document_for_another_key_is_refused(tmp_path: Path) -> None:
    worker = make_env(tmp_path / "worker")
    result = worker.store(make_key("one"), {"/dist/a": b"a"})
    assert result.manifest is not None
    client = make_env(tmp_path / "client")
    (tmp_path / "run").mkdir()
    tiers = TieredCache(
        local=client.cache,
        index=None,
        remote=PublishedRemote(blobs={}),
        backfill=Backfill(),
        spool_dir=tmp_path / "run",
        producer="client@host",
    )
    entry = asyncio.run(tiers.fetch_executed(make_key("two"), result.manifest.to_json()))
    tiers.close()
    assert entry is None
