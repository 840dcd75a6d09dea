"""Store → lookup → restore of the local cache (CACHE-010..020, CACHE-023)."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from hazremote.cache import (
    Compression,
    FsyncPolicy,
    LocalCache,
    LookupStatus,
    OutputFile,
    RestoreResult,
    RestoreStatus,
    StoreStatus,
    resolve_cache_root,
)
from hazremote.cache.codec import CHUNK_SIZE
from hazremote.domain.digest import Digest, digest_bytes
from hazremote.domain.model import HashName
from hazremote.domain.refs import TaskId
from hazremote.keys.components import PredecessorStreams
from tests.cache.cachekit import (
    HASH,
    REVISION,
    Env,
    Sinks,
    components,
    make_key,
    patterns,
    tree_snapshot,
)

JS = b"export function add(a, b) { return a + b; }\n" * 400  # compressible, > 4 KiB


def restore(
    env: Env, key: Digest, *patterns_text: str, sinks: Sinks | None = None
) -> RestoreResult:
    sinks = sinks or Sinks()
    found = env.cache.lookup(key)
    assert found.status is LookupStatus.HIT, found.detail
    assert found.manifest is not None
    return env.cache.restore(
        found.manifest,
        workspace_root=env.workspace,
        output_patterns=patterns(*(patterns_text or ("dist/**",))),
        stdout_sink=sinks.stdout.append,
        stderr_sink=sinks.stderr.append,
    )


def wipe_dist(env: Env) -> None:
    for path in sorted((env.workspace / "dist").rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()


def test_round_trip_restores_identical_bytes_modes_and_streams(env: Env) -> None:
    """CACHE-023: a hit reproduces every output's bytes and mode, and both streams exactly."""
    key = make_key("build")
    files = {
        "/dist/app.js": JS,
        "/dist/bin/run": b"#!/bin/sh\necho run\n",
        "/dist/empty": b"",
        "/dist/deep/er/still/data.bin": os.urandom(10_000),
    }
    modes = {"/dist/bin/run": 0o755, "/dist/app.js": 0o644, "/dist/empty": 0o600}
    stored = env.store(key, files, stdout=b"built 4 files\n", stderr=b"warning: x\n", modes=modes)
    assert stored.status is StoreStatus.STORED, stored.warning
    wipe_dist(env)

    sinks = Sinks()
    result = restore(env, key, sinks=sinks)

    assert result == RestoreResult(status=RestoreStatus.RESTORED, written=4)
    for path, data in files.items():
        restored = env.workspace / path.lstrip("/")
        assert restored.read_bytes() == data
        assert stat.S_IMODE(restored.stat().st_mode) == modes.get(path, 0o644)
    assert sinks.out == b"built 4 files\n"
    assert sinks.err == b"warning: x\n"
    assert list(env.workspace.rglob(".haz-restore-*")) == []


def test_binary_and_invalid_utf8_stream_bytes_survive(env: Env) -> None:
    """CACHE-023: streams are bytes, not text: NUL, invalid UTF-8, CR and no final newline."""
    key = make_key("binary-streams")
    out = b"\x00\xff\xfe\x80 not utf-8 \xc3\x28\r\npartial line"
    err = bytes(range(256)) * 20  # > 4 KiB: stored compressed
    assert env.store(key, {"/dist/a": b"a"}, stdout=out, stderr=err).ok
    sinks = Sinks()
    restore(env, key, sinks=sinks)
    assert sinks.out == out
    assert sinks.err == err


def test_large_streams_reach_the_sink_in_chunks(env: Env) -> None:
    """RC-006/CACHE-019: a stream larger than one chunk is replayed chunk by chunk, intact."""
    key = make_key("large-stream")
    big = b"".join(b"line %08d of the build log\n" % i for i in range(200_000))  # ~5 MB
    assert len(big) > 2 * CHUNK_SIZE
    assert env.store(key, {"/dist/a": b"a"}, stdout=big).ok
    sinks = Sinks()
    restore(env, key, sinks=sinks)
    assert sinks.out == big
    assert len(sinks.stdout) > 1
    assert max(len(c) for c in sinks.stdout) <= CHUNK_SIZE


def test_large_and_incompressible_outputs_round_trip(env: Env) -> None:
    """CACHE-010..013: large blobs stream through zstd; incompressible ones are stored raw."""
    key = make_key("large-outputs")
    text = b"".join(b"const v%d = %d;\n" % (i, i * 7) for i in range(300_000))
    noise = os.urandom(3 * CHUNK_SIZE + 17)
    stored = env.store(key, {"/dist/big.js": text, "/dist/noise.bin": noise, "/dist/t": b"x"})
    assert stored.manifest is not None
    compression = {o.path: o.compression for o in stored.manifest.outputs}
    assert compression == {
        "/dist/big.js": Compression.ZSTD,
        "/dist/noise.bin": Compression.NONE,
        "/dist/t": Compression.NONE,
    }
    blob = env.cache.entry_dir(key) / "outputs" / digest_bytes(HASH, text).hex
    assert blob.stat().st_size < len(text) // 3
    wipe_dist(env)
    restore(env, key)
    assert (env.workspace / "dist/big.js").read_bytes() == text
    assert (env.workspace / "dist/noise.bin").read_bytes() == noise


def test_manifest_records_what_was_stored(env: Env) -> None:
    """CACHE-011: sorted outputs with digest, size, mode; stream digests; the clock's time."""
    key = make_key("manifest")
    env.clock.now = 1_234_567_890.7
    stored = env.store(
        key, {"/dist/b": b"bb", "/dist/a": b"a"}, stdout=b"hi\n", modes={"/dist/b": 0o700}
    )
    manifest = stored.manifest
    assert manifest is not None
    assert manifest.key == key
    assert manifest.created_at_unix == 1_234_567_890
    assert manifest.exit_code == 0
    assert manifest.duration_ms == 42
    assert manifest.producer == "test@host"
    assert [(o.path, o.hash, o.size, o.mode) for o in manifest.outputs] == [
        ("/dist/a", digest_bytes(HASH, b"a"), 1, 0o644),
        ("/dist/b", digest_bytes(HASH, b"bb"), 2, 0o700),
    ]
    assert manifest.stdout.hash == digest_bytes(HASH, b"hi\n")
    assert manifest.stderr.hash == digest_bytes(HASH, b"")
    assert env.cache.lookup(key).manifest == manifest
    assert (env.cache.entry_dir(key) / "manifest.json").read_bytes() == manifest.to_json()


def test_identical_outputs_share_one_blob(env: Env) -> None:
    """CACHE-010: blobs are content-addressed inside an entry; equal files share one."""
    key = make_key("dedupe")
    assert env.store(key, {"/dist/a.js": JS, "/dist/b.js": JS}).ok
    assert len(list((env.cache.entry_dir(key) / "outputs").iterdir())) == 1
    wipe_dist(env)
    restore(env, key)
    assert (env.workspace / "dist/b.js").read_bytes() == JS


def test_current_outputs_are_left_alone(env: Env) -> None:
    """CACHE-020: an output already holding the recorded bytes keeps its inode."""
    key = make_key("current")
    assert env.store(key, {"/dist/a.js": JS, "/dist/b": b"b"}).ok
    before = (env.workspace / "dist/a.js").stat().st_ino
    (env.workspace / "dist/b").write_bytes(b"B")  # same size, other bytes: must be rewritten
    result = restore(env, key)
    assert (env.workspace / "dist/a.js").stat().st_ino == before
    assert (env.workspace / "dist/b").read_bytes() == b"b"
    assert (result.written, result.unchanged) == (1, 1)


class _Digests:
    """A scripted stat cache (the KnownDigests port): fixed answers, every call noted."""

    def __init__(self, answer: Digest | None) -> None:
        self.answer = answer
        self.asked: list[str] = []
        self.recorded: list[tuple[str, int, Digest, int]] = []
        self.clock = 1_000

    def now_ns(self) -> int:
        self.clock += 1
        return self.clock

    def lookup(self, path: str, st: os.stat_result) -> Digest | None:
        self.asked.append(path)
        return self.answer

    def record(self, path: str, st: os.stat_result, digest: Digest, *, observed_ns: int) -> bool:
        self.recorded.append((path, st.st_ino, digest, observed_ns))
        return True


def restore_with(
    env: Env, key: Digest, digests: _Digests, outputs: str = "dist/**"
) -> RestoreResult:
    manifest = env.cache.lookup(key).manifest
    assert manifest is not None
    return env.cache.restore(
        manifest,
        workspace_root=env.workspace,
        output_patterns=patterns(outputs),
        stdout_sink=lambda _: None,
        stderr_sink=lambda _: None,
        known_digests=digests,
    )


def test_the_stat_cache_answers_instead_of_re_reading_the_file(env: Env) -> None:
    """CACHE-020: the caller's stat cache is asked first; its answer is trusted."""
    key = make_key("stat-cache")
    assert env.store(key, {"/dist/a.js": JS}).ok
    digests = _Digests(digest_bytes(HASH, b"something else"))  # the stat cache says: changed
    inode = (env.workspace / "dist/a.js").stat().st_ino
    result = restore_with(env, key, digests)
    assert digests.asked == ["/dist/a.js"]
    assert digests.recorded == []  # answered: nothing was hashed
    assert result.written == 1
    assert (env.workspace / "dist/a.js").stat().st_ino != inode


def test_a_current_file_the_stat_cache_vouches_for_is_kept_unread(env: Env) -> None:
    """CACHE-020: an unchanged output known to the stat cache is neither read nor rewritten."""
    key = make_key("stat-cache-hit")
    assert env.store(key, {"/dist/a.js": JS}).ok
    digests = _Digests(digest_bytes(HASH, JS))
    inode = (env.workspace / "dist/a.js").stat().st_ino
    result = restore_with(env, key, digests)
    assert (result.written, result.unchanged) == (0, 1)
    assert digests.recorded == []
    assert (env.workspace / "dist/a.js").stat().st_ino == inode


def test_an_output_hashed_by_the_restore_is_reported_to_the_stat_cache(env: Env) -> None:
    """A current output the stat cache did not know is hashed once and recorded, with the
    clock read before its stat (the racy rule), so the next replay reads nothing."""
    key = make_key("stat-cache-learn")
    assert env.store(key, {"/dist/a.js": JS, "/dist/b": b"b"}).ok
    (env.workspace / "dist/b").write_bytes(b"B")  # same size, other bytes
    digests = _Digests(None)
    result = restore_with(env, key, digests)
    assert (result.written, result.unchanged) == (1, 1)
    recorded = {path: (ino, digest, clock) for path, ino, digest, clock in digests.recorded}
    assert set(recorded) == {"/dist/a.js", "/dist/b"}
    assert recorded["/dist/a.js"][0] == (env.workspace / "dist/a.js").stat().st_ino
    assert recorded["/dist/a.js"][1] == digest_bytes(HASH, JS)
    assert recorded["/dist/b"][1] == digest_bytes(HASH, b"B")  # what was on disk, not the entry
    assert all(clock > 1_000 for _, _, clock in recorded.values())


def test_current_output_with_another_mode_gets_the_recorded_mode(env: Env) -> None:
    """CACHE-023: same bytes but other permission bits: fixed in place, inode kept."""
    key = make_key("mode-fix")
    assert env.store(key, {"/dist/run": b"#!/bin/sh\n"}, modes={"/dist/run": 0o755}).ok
    path = env.workspace / "dist/run"
    os.chmod(path, 0o600)
    inode = path.stat().st_ino
    restore(env, key)
    assert stat.S_IMODE(path.stat().st_mode) == 0o755
    assert path.stat().st_ino == inode


def test_restore_replaces_a_symlink_at_the_destination_without_following_it(env: Env) -> None:
    """SEC-001: a symlink *as* the output is replaced by the file, its target untouched."""
    key = make_key("dest-symlink")
    assert env.store(key, {"/dist/a": b"payload"}).ok
    outside = env.tmp / "outside.txt"
    outside.write_bytes(b"precious")
    (env.workspace / "dist/a").unlink()
    (env.workspace / "dist/a").symlink_to(outside)
    restore(env, key)
    assert outside.read_bytes() == b"precious"
    assert not (env.workspace / "dist/a").is_symlink()
    assert (env.workspace / "dist/a").read_bytes() == b"payload"


def test_a_directory_in_the_way_fails_the_restore_and_changes_nothing(env: Env) -> None:
    """CACHE-019: a directory where a file goes is a workspace failure; the entry stays."""
    key = make_key("dir-in-the-way")
    assert env.store(key, {"/dist/a": b"a", "/dist/b": b"b"}).ok
    (env.workspace / "dist/b").unlink()
    (env.workspace / "dist/b").mkdir()
    (env.workspace / "dist/a").write_bytes(b"A")
    before = tree_snapshot(env.workspace)
    result = restore(env, key)
    assert result.status is RestoreStatus.FAILED
    assert "is a directory" in result.message
    assert tree_snapshot(env.workspace) == before
    assert env.cache.lookup(key).hit


def test_store_of_an_existing_valid_entry_keeps_the_first(env: Env) -> None:
    """CACHE-017: the entry stored first wins; the second store discards its staging."""
    key = make_key("twice")
    first = env.store(key, {"/dist/a": b"first"})
    second = env.store(key, {"/dist/a": b"second"})
    assert first.status is StoreStatus.STORED
    assert second.status is StoreStatus.ALREADY_PRESENT
    assert second.ok
    found = env.cache.lookup(key).manifest
    assert found is not None
    assert found.outputs[0].hash == digest_bytes(HASH, b"first")
    assert sorted(p.name for p in env.cache.entry_dir(key).parent.iterdir()) == [key.hex]


def test_store_replaces_an_existing_corrupt_entry(env: Env) -> None:
    """CACHE-017: an invalid entry under the key does not block a good store."""
    key = make_key("replace-corrupt")
    assert env.store(key, {"/dist/a": b"old"}).ok
    (env.cache.entry_dir(key) / "stdout").unlink()
    assert env.cache.lookup(key).status is LookupStatus.MISS_CORRUPT
    result = env.store(key, {"/dist/a": b"new"})
    assert result.status is StoreStatus.STORED
    assert env.cache.lookup(key).hit
    assert sorted(p.name for p in env.cache.entry_dir(key).parent.iterdir()) == [key.hex]


def test_a_miss_for_an_unknown_key(env: Env) -> None:
    """CACHE-016: no entry is miss-no-entry, a value."""
    result = env.cache.lookup(make_key("never stored"))
    assert result.status is LookupStatus.MISS_NO_ENTRY
    assert result.manifest is None


def test_sha256_workspace_round_trip(env: Env, make_cache: Callable[..., LocalCache]) -> None:
    """CACHE-002: one function hashes everything; a sha256 cache works the same way."""
    cache = make_cache(hash_name=HashName.SHA256)
    key = digest_bytes(HashName.SHA256, b"k")
    source = env.write("/dist/a", b"data")
    stdout = env.spool("o", b"out")
    stored = cache.store(
        key=key,
        components=components(),
        stdout=stdout,
        stderr=stdout,
        outputs=[OutputFile(path="/dist/a", source=source)],
        duration_ms=1,
        producer="p",
    )
    assert stored.manifest is not None
    assert stored.manifest.outputs[0].hash == digest_bytes(HashName.SHA256, b"data")
    assert cache.lookup(key).hit
    # The blake3 view of the same directory sees a schema mismatch, not corruption.
    assert env.cache.lookup(key).status is LookupStatus.MISS_SCHEMA_MISMATCH


def test_an_entry_of_chapter_revision_0_is_a_schema_mismatch_never_a_hit(
    env: Env, make_cache: Callable[..., LocalCache]
) -> None:
    """CACHE-003/007/015: entries written before chapter revision 1 (predecessors without an
    outputs digest) are ``miss-schema-mismatch`` for this client, never a hit."""
    assert REVISION == 1
    old = make_cache(chapter_revision=0)
    key = make_key("stored by revision 0")
    source = env.write("/dist/a", b"data")
    spool = env.spool("rev0", b"out")
    pred = PredecessorStreams(
        task=TaskId("lib", "build"),
        stdout=make_key("o"),
        stderr=make_key("e"),
        outputs=Digest(bytes(32)),
    )
    document = old.store(
        key=key,
        components=dataclasses.replace(components(), predecessors=(pred,)),
        stdout=spool,
        stderr=spool,
        outputs=[OutputFile(path="/dist/a", source=source)],
        duration_ms=1,
        producer="p",
    ).manifest
    assert document is not None
    # rewrite it as revision 0 wrote it: three-item predecessors
    path = env.cache.entry_dir(key) / "manifest.json"
    raw = json.loads(path.read_bytes())
    raw["key_components"]["predecessors"] = [p[:3] for p in raw["key_components"]["predecessors"]]
    path.write_text(json.dumps(raw))
    assert old.lookup(key).hit  # a revision-0 client still reads its own entry
    result = env.cache.lookup(key)
    assert result.status is LookupStatus.MISS_SCHEMA_MISMATCH
    assert result.manifest is None


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, "ws/.haz/cache"),
        ({"HAZ_CACHE_DIR": ""}, "ws/.haz/cache"),
        ({"HAZ_CACHE_DIR": "/shared/haz-cache"}, "/shared/haz-cache"),
        ({"HAZ_CACHE_DIR": "../shared"}, "ws/../shared"),
    ],
)
def test_cache_root_honours_haz_cache_dir(environ: dict[str, str], expected: str) -> None:
    """CACHE-010..013: HAZ_CACHE_DIR moves the cache (relative to the workspace root)."""
    assert resolve_cache_root(Path("ws"), environ) == Path(expected)


def test_full_fsync_policy_stores_the_same_entry(
    env: Env, make_cache: Callable[..., LocalCache]
) -> None:
    """CACHE-017: FsyncPolicy.FULL changes durability, not content: same manifest bytes."""
    key = make_key("durable")
    relaxed = env.store(key, {"/dist/a.js": JS, "/dist/b": b"b"}, stdout=b"out")
    assert relaxed.manifest is not None
    env.cache.clear()
    env.cache = make_cache(fsync=FsyncPolicy.FULL)
    durable = env.store(key, {"/dist/a.js": JS, "/dist/b": b"b"}, stdout=b"out")
    assert durable.status is StoreStatus.STORED
    assert durable.manifest == relaxed.manifest
    assert env.cache.lookup(key).hit
