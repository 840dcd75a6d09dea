"""The remote cache client against the real server (``serve()`` in-process over memory
stores with injectable faults) on a loopback port; a lying server where the server must break
the protocol.

Spec coverage: RC-001 (lookup, batched lookups, backfill via import), RC-002 (ALREADY_EXISTS is
success, read-only never writes; shared local hits are checked in one batch and only the
missing uploaded), RC-003 (errors are misses with one warning; the breaker
opens and re-probes), RC-004 (corrupt bytes are a miss), RC-005 (blobs before manifest),
RC-006 (large blobs stream in chunks, zstd on the wire), RC-007 (FindMissingBlobs dedup).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
import zstandard

from cache_service.auth import TokenAuthority, hash_secret, parse_tokens
from hazremote.cache import Manifest, StoreStatus
from hazremote.cache.local import VerifiedBlob
from hazremote.cache.manifest import parse_manifest
from hazremote.domain.digest import Digest
from hazremote.domain.model import RemoteMode
from hazremote.remote.client import RemoteCache
from tests.cache.cachekit import HASH, REVISION, Env, make_key
from tests.remote.conftest import FAST, CacheServer, ServerFactory, config_for
from tests.remote.lyingserver import LyingServer
from tests.support.faultstore import ALL, LOOKUPS, UPLOADS

_T = TypeVar("_T")


def run(coro: Coroutine[Any, Any, _T]) -> _T:
    return asyncio.run(coro)


def client(url: str, *, memory_budget: int | None = None, **kwargs: Any) -> RemoteCache:
    config = config_for(url, **kwargs)
    if memory_budget is None:
        return RemoteCache(config, hash_name=HASH, chapter_revision=REVISION)
    return RemoteCache(
        config, hash_name=HASH, chapter_revision=REVISION, memory_budget=memory_budget
    )


def stored(env: Env, label: str, files: dict[str, bytes], **kwargs: Any) -> Manifest:
    """Store a result in ``env``'s local cache under the key of ``label``."""
    result = env.store(make_key(label), files, **kwargs)
    assert result.status is StoreStatus.STORED
    assert result.manifest is not None
    return result.manifest


async def upload(remote: RemoteCache, env: Env, manifest: Manifest) -> bool:
    return await remote.upload(manifest=manifest, blobs=env.cache.stored_blobs(manifest))


async def fetch_into(remote: RemoteCache, env: Env, key: Digest, tmp: Path) -> Manifest | None:
    """Lookup → download → import into ``env``'s local cache (the lifecycle's RC-001 path)."""
    manifest = await remote.lookup(key)
    if manifest is None:
        return None
    tmp.mkdir(parents=True, exist_ok=True)
    files = await remote.download(manifest, tmp)
    if files is None:
        return None
    result = env.cache.import_entry(manifest, lambda digest, size: files[digest])
    assert result.ok, result.warning
    return env.cache.lookup(key).manifest


def test_upload_then_lookup_from_a_second_cache_restores_identical_bytes(
    server: CacheServer, make_env: Callable[[str], Env], tmp_path: Path
) -> None:
    """RC-001/CACHE-023: a result uploaded by one clone restores byte-identically in another."""
    first, second = make_env("a"), make_env("b")
    big = os.urandom(3000) * 2000  # compressible, several MiB: streamed
    manifest = stored(
        first,
        "k1",
        {"/dist/app.js": b"console.log(1)\n", "/dist/big.bin": big, "/dist/tool": b"#!/bin/sh\n"},
        stdout=b"built\n",
        stderr=b"warn\n",
        modes={"/dist/tool": 0o755},
    )

    async def scenario() -> Manifest | None:
        remote = client(server.url)
        try:
            assert await upload(remote, first, manifest)
            assert await remote.lookup(make_key("absent")) is None  # a miss is a value
            return await fetch_into(remote, second, make_key("k1"), tmp_path / "dl")
        finally:
            await remote.close()

    imported = run(scenario())
    assert imported is not None
    result, sinks = second.restore(imported)
    assert result.ok, result.message
    assert (second.workspace / "dist/big.bin").read_bytes() == big
    assert (second.workspace / "dist/app.js").read_bytes() == b"console.log(1)\n"
    assert (second.workspace / "dist/tool").stat().st_mode & 0o777 == 0o755
    assert (sinks.out, sinks.err) == (b"built\n", b"warn\n")
    assert server.faults.rpcs["WriteBlob"] >= 1  # the big blob was streamed, not batched
    assert server.faults.rpcs["ReadBlob"] >= 1


def test_lookups_issued_together_go_out_as_one_batch(
    server: CacheServer, make_env: Callable[[str], Env]
) -> None:
    """RC-001: lookups of tasks that become ready together share one BatchGetManifests."""
    env = make_env("a")
    manifests = [stored(env, f"k{i}", {f"/dist/{i}": str(i).encode()}) for i in range(3)]

    async def scenario() -> list[Manifest | None]:
        remote = client(server.url)
        try:
            for manifest in manifests:
                assert await upload(remote, env, manifest)
            server.faults.rpcs.clear()
            server.faults.calls.clear()
            keys = [make_key(f"k{i}") for i in range(5)]  # 3 hits, 2 misses
            return list(await asyncio.gather(*(remote.lookup(k) for k in keys)))
        finally:
            await remote.close()

    found = run(scenario())
    assert [m is not None for m in found] == [True, True, True, False, False]
    # One batch of five: one lookup RPC, which read the five keys from storage.
    assert server.faults.rpcs["BatchGetManifests"] == 1
    assert server.faults.rpcs["GetManifest"] == 0
    assert server.faults.calls["manifest_get"] == 5


def test_upload_sends_only_blobs_the_server_lacks(
    server: CacheServer, make_env: Callable[[str], Env]
) -> None:
    """RC-007: FindMissingBlobs first; a blob already present is not sent again."""
    env = make_env("a")
    shared = b"shared library bytes\n" * 100
    one = stored(env, "one", {"/dist/lib.so": shared, "/dist/a": b"a"})
    two = stored(env, "two", {"/dist/lib.so": shared, "/dist/b": b"b"})

    async def scenario() -> None:
        remote = client(server.url)
        try:
            assert await upload(remote, env, one)
            server.faults.written.clear()
            assert await upload(remote, env, two)
            assert await upload(remote, env, two)  # identical put again: success
        finally:
            await remote.close()

    run(scenario())
    lib = next(o.hash for o in two.outputs if o.path == "/dist/lib.so")
    b_blob = next(o.hash for o in two.outputs if o.path == "/dist/b")
    assert lib.raw not in server.faults.written
    assert server.faults.written == [b_blob.raw]  # empty streams were already there too


def test_large_blob_streams_in_several_chunks(
    make_server: ServerFactory, make_env: Callable[[str], Env], tmp_path: Path
) -> None:
    """RC-006: a blob above the batch bound goes through WriteBlob/ReadBlob in chunks."""
    server = make_server(max_batch_total_size=64 * 1024, stream_chunk_size=16 * 1024)
    env, other = make_env("a"), make_env("b")
    data = os.urandom(300 * 1024)  # incompressible: ~19 chunks of 16 KiB
    manifest = stored(env, "big", {"/dist/blob": data})

    async def scenario() -> Manifest | None:
        remote = client(server.url)
        try:
            assert await upload(remote, env, manifest)
            return await fetch_into(remote, other, make_key("big"), tmp_path / "dl")
        finally:
            await remote.close()

    assert run(scenario()) is not None
    assert server.faults.rpcs["WriteBlob"] == 1
    assert server.faults.write_chunks  # the chunks of the stream, as the store received them
    assert max(server.faults.write_chunks) > 4
    assert server.faults.rpcs["ReadBlob"] == 1
    assert server.blobs()[manifest.outputs[0].hash.raw] == data


def test_put_answered_already_exists_is_success(
    server: CacheServer, make_env: Callable[[str], Env]
) -> None:
    """RC-002: another run stored a different manifest for the key first: not an error."""
    first, second = make_env("a"), make_env("b")
    one = stored(first, "same-key", {"/dist/x": b"one"})
    two = stored(second, "same-key", {"/dist/x": b"two"})

    async def scenario() -> tuple[bool, bool, str | None]:
        remote = client(server.url)
        try:
            return (
                await upload(remote, first, one),
                await upload(remote, second, two),
                (remote.warning()),
            )
        finally:
            await remote.close()

    assert run(scenario()) == (True, True, None)


def test_read_only_client_never_writes(server: CacheServer, make_env: Callable[[str], Env]) -> None:
    """RC-002: read-only never uploads anything."""
    env = make_env("a")
    manifest = stored(env, "ro", {"/dist/x": b"x"})

    async def scenario() -> bool:
        remote = client(server.url, mode=RemoteMode.READ_ONLY)
        try:
            return await upload(remote, env, manifest)
        finally:
            await remote.close()

    assert run(scenario()) is False
    assert server.manifests() == {}
    assert server.blobs() == {}


@pytest.mark.parametrize("memory_budget", [0, None], ids=["as-files", "in-memory"])
def test_corrupt_blob_from_the_server_is_a_miss_with_a_warning(
    liar: LyingServer, make_env: Callable[[str], Env], tmp_path: Path, memory_budget: int | None
) -> None:
    """RC-004: bytes that do not match their digest are never used: a miss and one warning.

    Needs the liar: the real server verifies what it reads and never sends such bytes."""
    server = liar
    env, other = make_env("a"), make_env("b")
    stored_manifest = stored(env, "c", {"/dist/x": b"payload" * 10, "/dist/y": os.urandom(2 << 20)})

    async def scenario() -> tuple[Manifest | None, str | None]:
        remote = client(server.url, memory_budget=memory_budget)
        try:
            assert await upload(remote, env, stored_manifest)
            server.state.corrupt_reads = True
            return await fetch_into(remote, other, make_key("c"), tmp_path / "dl"), (
                remote.warning()
            )
        finally:
            await remote.close()

    found, warning = run(scenario())
    assert found is None
    assert warning is not None
    assert "corrupt data" in warning
    assert other.cache.lookup(make_key("c")).manifest is None  # nothing was imported


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (
            zstandard.ZstdCompressor().compress(b"y" * (64 << 20)),
            "declares 67108864 bytes, not 700",
        ),
        (b"not a zstd frame at all", "is not a valid zstd frame"),
    ],
    ids=["declares-more", "garbage"],
)
def test_a_frame_that_declares_another_size_is_refused_unread(
    liar: LyingServer,
    make_env: Callable[[str], Env],
    tmp_path: Path,
    frame: bytes,
    message: str,
) -> None:
    """RC-004: a batch item whose zstd frame declares more bytes than recorded (a 64 MiB
    "bomb" of a few KiB here) is refused before it is decompressed: a miss with a warning.

    Needs the liar: the real server stores only frames of the recorded size and content."""
    server = liar
    env, other = make_env("a"), make_env("b")
    manifest = stored(env, "bomb", {"/dist/x": b"z" * 700})

    async def scenario() -> tuple[Manifest | None, str | None]:
        remote = client(server.url)
        try:
            assert await upload(remote, env, manifest)
            server.state.frames[manifest.outputs[0].hash.raw] = frame
            found = await fetch_into(remote, other, make_key("bomb"), tmp_path / "dl")
            return found, remote.warning()
        finally:
            await remote.close()

    found, warning = run(scenario())
    assert found is None
    assert warning is not None
    assert message in warning
    assert other.cache.lookup(make_key("bomb")).manifest is None


def token_authority(secret: str) -> TokenAuthority:
    """The server's own tokens file checking: one read-write token for namespace main."""
    document = (
        "anonymous: none\ntokens:\n  - name: t\n"
        f'    sha256: "{hash_secret(secret)}"\n    namespaces: [main]\n    scope: read-write\n'
    )
    return TokenAuthority(parse_tokens(document, source="test"))


def _dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_server_is_a_miss_with_one_warning() -> None:
    """RC-003: an unreachable remote is a miss; many failures still make ONE warning."""

    async def scenario() -> tuple[list[Manifest | None], str | None, int]:
        remote = client(f"grpc://127.0.0.1:{_dead_port()}")
        try:
            found = [await remote.lookup(make_key(str(i))) for i in range(5)]
            return found, remote.warning(), remote.stats.refused_by_breaker
        finally:
            await remote.close()

    found, warning, refused = run(scenario())
    assert found == [None] * 5
    assert warning is not None
    assert warning.count("remote cache") == 1
    assert refused >= 1  # FAST opens the breaker after 2 failures: later calls cost nothing


def test_black_hole_costs_a_deadline_not_a_hang(server: CacheServer) -> None:
    """RC-003: a server that never answers is cut off by the deadline: a miss."""
    server.faults.hang(3 * FAST.lookup_s, ALL)

    async def scenario() -> tuple[Manifest | None, str | None]:
        remote = client(server.url)
        try:
            return await remote.lookup(make_key("x")), remote.warning()
        finally:
            await remote.close()

    found, warning = run(scenario())
    server.faults.heal()
    assert found is None
    assert warning is not None
    assert "DEADLINE_EXCEEDED" in warning


def test_breaker_opens_then_reprobes_and_recovers(
    server: CacheServer, make_env: Callable[[str], Env]
) -> None:
    """RC-003: the breaker does not disable the remote for good: after the cool-down, one
    probe goes out, and once the server is healthy again lookups hit."""

    env = make_env("a")
    manifest = stored(env, "r", {"/dist/x": b"x"})

    async def scenario() -> None:
        remote = client(server.url)
        try:
            assert await upload(remote, env, manifest)
            server.faults.fail(ALL)  # storage errors: UNAVAILABLE
            assert await remote.lookup(make_key("r")) is None
            assert await remote.lookup(make_key("r")) is None
            calls = server.faults.rpcs["BatchGetManifests"]
            assert await remote.lookup(make_key("r")) is None  # breaker open: not even sent
            assert server.faults.rpcs["BatchGetManifests"] == calls
            server.faults.heal()
            await asyncio.sleep(FAST.breaker_cooldown_s + 0.05)
            assert await remote.lookup(make_key("r")) is not None  # the re-probe succeeded
            assert await remote.lookup(make_key("r")) is not None
            assert remote.breaker("lookup").openings == 1
        finally:
            await remote.close()

    run(scenario())


def test_a_remote_manifest_for_another_key_is_rejected(
    liar: LyingServer, make_env: Callable[[str], Env]
) -> None:
    """RC-004/SEC-001: a manifest stored under the wrong key is bad data: a miss + warning.

    Needs the liar: the real server refuses a document whose key is not the request's."""
    server = liar
    env = make_env("a")
    manifest = stored(env, "real", {"/dist/x": b"x"})

    async def scenario() -> tuple[Manifest | None, str | None]:
        remote = client(server.url)
        try:
            assert await upload(remote, env, manifest)
            document = server.state.manifests[("main", make_key("real").raw)]
            server.state.manifests[("main", make_key("fake").raw)] = document
            return await remote.lookup(make_key("fake")), remote.warning()
        finally:
            await remote.close()

    found, warning = run(scenario())
    assert found is None
    assert warning is not None
    assert "is for key" in warning


def test_a_remote_entry_of_chapter_revision_0_is_a_miss_never_a_hit(
    liar: LyingServer, make_env: Callable[[str], Env]
) -> None:
    """CACHE-003/007/015, RC-003: a remote entry written before chapter revision 1
    (predecessors without an outputs digest) is refused as a schema mismatch — a miss, by
    lookup and by prefetch — however complete its blobs.

    Needs the liar: the real server refuses documents of a revision below the client's."""
    server = liar
    assert REVISION == 1
    env = make_env("a")
    manifest = stored(env, "rev0", {"/dist/x": b"x"})

    async def scenario() -> tuple[Manifest | None, int, str | None]:
        remote = client(server.url)
        try:
            assert await upload(remote, env, manifest)
            slot = ("main", make_key("rev0").raw)
            doc = json.loads(server.state.manifests[slot])
            doc["chapter_revision"] = 0
            doc["key_components"]["predecessors"] = [
                ["lib:build", make_key("o").hex, make_key("e").hex]
            ]
            server.state.manifests[slot] = json.dumps(doc).encode()
            prefetched = await remote.prefetch([make_key("rev0")])
            return await remote.lookup(make_key("rev0")), len(prefetched), remote.warning()
        finally:
            await remote.close()

    found, prefetched, warning = run(scenario())
    assert found is None
    assert prefetched == 0
    assert warning is not None
    assert "chapter_revision 0, this client uses 1" in warning


@pytest.mark.parametrize("hang", [False, True])
def test_drain_waits_for_background_uploads_bounded_by_its_timeout(
    server: CacheServer, make_env: Callable[[str], Env], hang: bool
) -> None:
    """RC-002: background uploads finish at the end of the run, but never beyond a bound."""
    env = make_env("a")
    manifest = stored(env, "bg", {"/dist/x": b"x"})
    if hang:
        server.faults.hang(2.0, UPLOADS)

    async def scenario() -> tuple[int, list[int]]:
        remote = client(server.url)
        seen: list[int] = []
        try:
            remote.upload_later(manifest=manifest, blobs=env.cache.stored_blobs(manifest))
            cut = await remote.drain(timeout_s=0.3 if hang else 5.0, progress=seen.append)
            return cut, seen
        finally:
            await remote.close()

    cut, seen = run(scenario())
    server.faults.heal()
    if hang:
        assert cut == 1
        assert seen == [1, 0]  # announced once it took a while, then cleared
    else:
        assert cut == 0
        assert seen == []  # quick uploads are not announced
        assert ("main", make_key("bg").raw) in server.manifests()


def test_prefetch_answers_lookups_and_batches_the_blobs_of_many_hits(
    server: CacheServer, make_env: Callable[[str], Env], tmp_path: Path
) -> None:
    """RC-001/RC-006: a level's lookups go out as one batch up front, later lookups need no
    round trip (misses included), and the blobs of all hits share one BatchReadBlobs; small
    blobs stay in memory, verified, and no spool file is written."""
    env = make_env("a")
    manifests = [stored(env, f"p{i}", {f"/dist/{i}": f"data {i}".encode()}) for i in range(6)]

    async def scenario() -> None:
        remote = client(server.url)
        try:
            for manifest in manifests:
                assert await upload(remote, env, manifest)
            keys = [make_key(f"p{i}") for i in range(8)]  # 6 hits, 2 misses
            hits = await remote.prefetch(keys)
            assert set(hits) == set(keys[:6])
            lookups = server.faults.rpcs["BatchGetManifests"]
            reads = server.faults.rpcs["BatchReadBlobs"]
            dest = tmp_path / "prefetched"
            dest.mkdir()
            remote.prefetch_blobs(list(hits.values()), dest)
            for key in keys:
                found = await remote.lookup(key)
                assert (found is not None) == (key in hits)
                if found is not None:
                    blobs = await remote.download(found, tmp_path / "unused")
                    assert blobs is not None
                    assert all(isinstance(blob, VerifiedBlob) for blob in blobs.values())
            assert server.faults.rpcs["BatchGetManifests"] == lookups
            assert server.faults.rpcs["BatchReadBlobs"] == reads + 1
            assert not (tmp_path / "unused").exists()
            assert list(dest.iterdir()) == []
        finally:
            await remote.close()

    run(scenario())


def test_a_lookup_of_a_key_being_prefetched_waits_for_that_batch(
    server: CacheServer, make_env: Callable[[str], Env]
) -> None:
    """RC-001: the lookahead runs beside the scheduler; a probe's lookup of a key whose
    prefetch is under way waits for its answer instead of sending a lookup of its own."""
    env = make_env("a")
    manifest = stored(env, "p", {"/dist/p": b"p"})

    async def scenario() -> tuple[Manifest | None, Manifest | None, int]:
        remote = client(server.url)
        try:
            assert await upload(remote, env, manifest)
            before = server.faults.rpcs["BatchGetManifests"]
            # The prefetch's batch is slow to answer: ~0.3 s for its two keys.
            server.faults.hang(0.15, LOOKUPS)
            prefetch = asyncio.ensure_future(remote.prefetch([make_key("p"), make_key("q")]))
            await asyncio.sleep(0.05)  # the batch is on the wire
            hit, miss = await asyncio.gather(
                remote.lookup(make_key("p")), remote.lookup(make_key("q"))
            )
            await prefetch
            return hit, miss, server.faults.rpcs["BatchGetManifests"] - before
        finally:
            server.faults.heal()
            await remote.close()

    hit, miss, batches = run(scenario())
    assert hit is not None
    assert hit.key == make_key("p")
    assert miss is None
    assert batches == 1


def test_a_hit_s_document_is_handed_over_once_as_received(
    server: CacheServer, make_env: Callable[[str], Env]
) -> None:
    """The backfill gets the manifest document as the server sent it (no re-serialising),
    once; a miss has none."""
    env = make_env("a")
    manifest = stored(env, "d", {"/dist/d": b"d"})

    async def scenario() -> tuple[Manifest | None, bytes | None, bytes | None, bytes | None]:
        remote = client(server.url)
        try:
            assert await upload(remote, env, manifest)
            found = await remote.lookup(make_key("d"))
            assert await remote.lookup(make_key("none")) is None
            first = remote.take_document(make_key("d"))
            return (
                found,
                first,
                remote.take_document(make_key("d")),
                remote.take_document(make_key("none")),
            )
        finally:
            await remote.close()

    found, first, again, missed = run(scenario())
    assert found is not None
    assert first == server.manifests()[("main", make_key("d").raw)]
    assert parse_manifest(first, chapter_revision=REVISION, hash_name=HASH) == found
    assert again is None
    assert missed is None


def test_batch_blobs_past_the_memory_budget_arrive_as_verified_files(
    server: CacheServer, make_env: Callable[[str], Env], tmp_path: Path
) -> None:
    """RC-006: downloaded small blobs stay in memory only within the client's budget; the
    rest are written to files in the download directory, and both restore identically."""
    first, second = make_env("a"), make_env("b")
    manifest = stored(first, "m", {"/dist/a": b"a" * 100, "/dist/b": b"b" * 200}, stdout=b"out\n")

    async def scenario() -> Manifest | None:
        remote = client(server.url, memory_budget=150)
        try:
            assert await upload(remote, first, manifest)
            found = await remote.lookup(make_key("m"))
            assert found is not None
            blobs = await remote.download(found, tmp_path / "dl")
            assert blobs is not None
            kept = [blob for blob in blobs.values() if isinstance(blob, VerifiedBlob)]
            files = [blob for blob in blobs.values() if isinstance(blob, Path)]
            assert kept
            assert files
            assert sum(len(blob.data) for blob in kept) <= 150
            assert all(path.parent == tmp_path / "dl" for path in files)
            result = second.cache.import_entry(found, lambda digest, size: blobs[digest])
            assert result.ok, result.warning
            return second.cache.lookup(make_key("m")).manifest
        finally:
            await remote.close()

    imported = run(scenario())
    assert imported is not None
    result, sinks = second.restore(imported)
    assert result.ok, result.message
    assert (second.workspace / "dist/a").read_bytes() == b"a" * 100
    assert (second.workspace / "dist/b").read_bytes() == b"b" * 200
    assert sinks.out == b"out\n"


def test_a_blob_above_the_server_limit_skips_the_upload_with_a_warning(
    make_server: ServerFactory, make_env: Callable[[str], Env]
) -> None:
    """SVC-006/RC-003: the client respects the announced max blob size: nothing is sent,
    the upload is skipped with the run's one warning, and the remote stays usable."""
    server = make_server(max_blob_size=1000)
    env = make_env("a")
    manifest = stored(env, "huge", {"/dist/big": b"z" * 5000})

    async def scenario() -> tuple[bool, str | None, bool]:
        remote = client(server.url)
        try:
            done = await upload(remote, env, manifest)
            return done, remote.warning(), remote.breaker("upload").allow()
        finally:
            await remote.close()

    done, warning, usable = run(scenario())
    assert not done
    assert warning is not None
    assert "exceeds the server's limit" in warning
    assert usable
    assert server.faults.rpcs["WriteBlob"] == server.faults.rpcs["BatchUpdateBlobs"] == 0
    assert server.faults.written == []
    assert server.manifests() == {}


def test_token_travels_as_bearer_metadata_and_auth_failure_is_a_miss(
    make_server: ServerFactory, make_env: Callable[[str], Env]
) -> None:
    """SPEC §5/RC-003: `authorization: Bearer <token>`; a refused token is a miss + warning."""
    from dataclasses import replace

    server = make_server(authenticator=token_authority("s3cret"))
    env = make_env("a")
    manifest = stored(env, "auth", {"/dist/x": b"x"})

    async def scenario(token: str | None) -> tuple[Manifest | None, str | None]:
        config = replace(config_for(server.url), token=token)
        remote = RemoteCache(config, hash_name=HASH, chapter_revision=REVISION)
        try:
            if token is not None:
                assert await upload(remote, env, manifest)
            return await remote.lookup(make_key("auth")), remote.warning()
        finally:
            await remote.close()

    found, warning = run(scenario("s3cret"))
    assert found is not None
    assert warning is None
    refused, warning = run(scenario(None))
    assert refused is None
    assert warning is not None
    assert "UNAUTHENTICATED" in warning


def test_share_asks_once_per_batch_and_uploads_only_what_the_remote_lacks(
    server: CacheServer, make_env: Callable[[str], Env]
) -> None:
    """RC-002: local hits shared in one loop iteration cost one BatchGetManifests; the ones
    the remote lacks are uploaded in the background; every key found or uploaded is
    confirmed; a key is shared once per run."""
    env = make_env("a")
    entries = [stored(env, name, {f"/dist/{name}": name.encode()}) for name in "xyz"]
    confirmed: list[Digest] = []

    async def scenario() -> None:
        seed = client(server.url)
        try:
            assert await upload(seed, env, entries[0])  # the remote has x already
        finally:
            await seed.close()
        server.faults.rpcs.clear()
        server.faults.calls.clear()
        remote = RemoteCache(
            config_for(server.url),
            hash_name=HASH,
            chapter_revision=REVISION,
            on_confirmed=confirmed.extend,
        )
        try:
            remote.share(entries[:2], env.cache.stored_blobs)
            remote.share(entries[1:], env.cache.stored_blobs)  # y again: once
            assert await remote.drain(timeout_s=10) == 0
            remote.share(entries, env.cache.stored_blobs)  # all handled already
            assert await remote.drain(timeout_s=10) == 0
        finally:
            await remote.close()

    run(scenario())
    assert server.faults.rpcs["BatchGetManifests"] == 1
    assert server.faults.calls["manifest_get"] == 3  # that one batch asked for the 3 keys
    assert server.faults.rpcs["PutManifest"] == 2  # y and z
    assert len(confirmed) == 3
    assert set(confirmed) == {e.key for e in entries}
    assert {key for _, key in server.manifests()} == {e.key.raw for e in entries}


def test_share_with_a_failing_remote_uploads_nothing_and_leaves_one_warning(
    server: CacheServer, make_env: Callable[[str], Env]
) -> None:
    """RC-003: a failed check is one warning; nothing is confirmed or uploaded."""
    env = make_env("a")
    entry = stored(env, "x", {"/dist/x": b"x"})
    server.faults.fail(ALL)  # storage errors: UNAVAILABLE
    confirmed: list[Digest] = []

    async def scenario() -> str | None:
        remote = RemoteCache(
            config_for(server.url),
            hash_name=HASH,
            chapter_revision=REVISION,
            on_confirmed=confirmed.extend,
        )
        try:
            remote.share([entry], env.cache.stored_blobs)
            await remote.drain(timeout_s=10)
            return remote.warning()
        finally:
            await remote.close()

    warning = run(scenario())
    assert warning is not None
    assert "UNAVAILABLE" in warning
    assert confirmed == []
    assert server.faults.rpcs["PutManifest"] == 0
