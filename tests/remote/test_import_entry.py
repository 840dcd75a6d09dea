"""``LocalCache.import_entry``: the RC-001 backfill publishes complete, verified entries only.

Spec coverage: RC-001 (a remote entry becomes a local entry), RC-004 (bytes that do not hash
to their record are refused), CACHE-017 (staged, manifest last, atomic publish; nothing left
behind after a failure), CACHE-015 (a manifest of another revision is refused).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from hazremote.cache import Compression, Manifest, RestoreResult, RestoreStatus, StoreStatus
from hazremote.domain.digest import Digest
from tests.cache.cachekit import Env, Sinks, make_key, patterns


def source_entry(env: Env, label: str) -> Manifest:
    result = env.store(
        make_key(label),
        {"/dist/text": b"hello " * 2000, "/dist/noise": os.urandom(5000), "/dist/empty": b""},
        stdout=b"out\n",
        modes={"/dist/text": 0o755},
    )
    assert result.manifest is not None
    return result.manifest


def raw_files(env: Env, manifest: Manifest, into: Path) -> dict[Digest, Path]:
    """The uncompressed bytes of every blob of ``manifest``, as a download would leave them."""
    into.mkdir(parents=True, exist_ok=True)
    files: dict[Digest, Path] = {}
    for blob in env.cache.stored_blobs(manifest):
        target = into / blob.digest.hex
        data = blob.path.read_bytes()
        if blob.compression is Compression.ZSTD:
            import zstandard

            data = zstandard.ZstdDecompressor().decompress(data)
        target.write_bytes(data)
        files[blob.digest] = target
    return files


def restore_entry(env: Env, label: str) -> Sinks:
    """Look the entry up in ``env`` and restore it; it must succeed. Returns its streams."""
    found = env.cache.lookup(make_key(label))
    assert found.manifest is not None
    sinks = Sinks()
    restored = env.cache.restore(
        found.manifest,
        workspace_root=env.workspace,
        output_patterns=patterns("/dist/**"),
        stdout_sink=sinks.stdout.append,
        stderr_sink=sinks.stderr.append,
    )
    assert restored.ok, restored.message
    return sinks


def leftovers(env: Env) -> list[str]:
    return [p.name for p in env.cache.root.rglob(".tmp-*")]


def test_imported_entry_restores_like_the_original(
    make_env: Callable[[str], Env], tmp_path: Path
) -> None:
    """RC-001: an imported entry is a normal local entry: lookup hits and restore is exact."""
    origin, target = make_env("origin"), make_env("target")
    manifest = source_entry(origin, "k")
    files = raw_files(origin, manifest, tmp_path / "raw")
    result = target.cache.import_entry(manifest, lambda digest, size: files[digest])
    assert result.status is StoreStatus.STORED
    sinks = restore_entry(target, "k")
    assert (target.workspace / "dist/text").read_bytes() == b"hello " * 2000
    assert (target.workspace / "dist/text").stat().st_mode & 0o777 == 0o755
    assert (target.workspace / "dist/empty").read_bytes() == b""
    assert sinks.out == b"out\n"
    # Importing again finds the valid entry in place: success, nothing replaced.
    again = target.cache.import_entry(manifest, lambda digest, size: files[digest])
    assert again.status is StoreStatus.ALREADY_PRESENT


def test_a_fetched_blob_with_other_bytes_publishes_nothing(
    make_env: Callable[[str], Env], tmp_path: Path
) -> None:
    """RC-004/CACHE-017: wrong bytes fail the import; no entry, no staging directory left."""
    origin, target = make_env("origin"), make_env("target")
    manifest = source_entry(origin, "k")
    files = raw_files(origin, manifest, tmp_path / "raw")
    victim = next(o.hash for o in manifest.outputs if o.path == "/dist/noise")
    data = bytearray(files[victim].read_bytes())
    data[100] ^= 0x01
    files[victim].write_bytes(bytes(data))
    result = target.cache.import_entry(manifest, lambda digest, size: files[digest])
    assert result.status is StoreStatus.FAILED
    assert result.warning is not None
    assert "other bytes" in result.warning
    assert target.cache.lookup(make_key("k")).manifest is None
    assert leftovers(target) == []


def test_a_missing_blob_or_foreign_revision_publishes_nothing(
    make_env: Callable[[str], Env], tmp_path: Path
) -> None:
    """CACHE-015/CACHE-017: a fetch that fails, or a manifest of another revision, is refused."""
    origin, target = make_env("origin"), make_env("target")
    manifest = source_entry(origin, "k")

    def no_blob(digest: Digest, size: int) -> Path:
        raise OSError("download vanished")

    failed = target.cache.import_entry(manifest, no_blob)
    assert failed.status is StoreStatus.FAILED
    foreign = replace(manifest, chapter_revision=manifest.chapter_revision + 1)
    refused = target.cache.import_entry(foreign, no_blob)
    assert refused.status is StoreStatus.FAILED
    assert target.cache.lookup(make_key("k")).manifest is None
    assert leftovers(target) == []


def test_small_blobs_are_linked_as_is_and_large_ones_re_encoded(
    make_env: Callable[[str], Env], tmp_path: Path
) -> None:
    """Small fetched blobs are verified and hard-linked (no bytes rewritten, stored
    uncompressed); a large compressible one is compressed at rest. The download's names can
    go away afterwards: the entry keeps its bytes."""
    origin, target = make_env("origin"), make_env("target")
    big = b"compressible line\n" * 10_000  # 180 KB
    stored = origin.store(make_key("mixed"), {"/dist/big": big, "/dist/small": b"small"})
    assert stored.manifest is not None
    manifest = stored.manifest
    files = raw_files(origin, manifest, tmp_path / "raw")
    result = target.cache.import_entry(manifest, lambda digest, size: files[digest])
    assert result.status is StoreStatus.STORED
    assert result.manifest is not None
    by_path = {o.path: o for o in result.manifest.outputs}
    assert by_path["/dist/small"].compression is Compression.NONE
    assert by_path["/dist/big"].compression is Compression.ZSTD
    blobs = {b.digest: b.path for b in target.cache.stored_blobs(result.manifest)}
    small = by_path["/dist/small"].hash
    assert blobs[small].stat().st_ino == files[small].stat().st_ino
    for path in files.values():
        path.unlink()
    restore_entry(target, "mixed")
    assert (target.workspace / "dist/big").read_bytes() == big
    assert (target.workspace / "dist/small").read_bytes() == b"small"


def test_a_large_fetched_blob_with_other_bytes_publishes_nothing(
    make_env: Callable[[str], Env], tmp_path: Path
) -> None:
    """RC-004 on the re-encoding path too (blobs above the as-is limit)."""
    origin, target = make_env("origin"), make_env("target")
    stored = origin.store(make_key("big"), {"/dist/big": os.urandom(100_000)})
    assert stored.manifest is not None
    files = raw_files(origin, stored.manifest, tmp_path / "raw")
    victim = stored.manifest.outputs[0].hash
    data = bytearray(files[victim].read_bytes())
    data[-1] ^= 0x01
    files[victim].write_bytes(bytes(data))
    result = target.cache.import_entry(stored.manifest, lambda digest, size: files[digest])
    assert result.status is StoreStatus.FAILED
    assert "other bytes" in (result.warning or "")
    assert target.cache.lookup(make_key("big")).manifest is None
    assert leftovers(target) == []


def test_a_restore_from_fetched_files_verifies_every_byte(
    make_env: Callable[[str], Env], tmp_path: Path
) -> None:
    """RC-001: a remote hit is restored from its downloaded files before any backfill; a
    file with other bytes, or a blob that was not fetched, is CORRUPT and changes nothing."""
    origin, target = make_env("origin"), make_env("target")
    manifest = source_entry(origin, "k")
    files = raw_files(origin, manifest, tmp_path / "raw")

    def restore(with_files: dict[Digest, Path]) -> tuple[RestoreResult, Sinks]:
        sinks = Sinks()
        result = target.cache.restore(
            manifest,
            fetched=with_files,
            workspace_root=target.workspace,
            output_patterns=patterns("/dist/**"),
            stdout_sink=sinks.stdout.append,
            stderr_sink=sinks.stderr.append,
        )
        return result, sinks

    victim = next(o.hash for o in manifest.outputs if o.path == "/dist/noise")
    bad = dict(files)
    bad[victim] = tmp_path / "swapped"
    bad[victim].write_bytes(os.urandom(5000))
    missing = {d: p for d, p in files.items() if d != victim}
    for broken in (bad, missing):
        result, sinks = restore(broken)
        assert result.status is RestoreStatus.CORRUPT
        assert not (target.workspace / "dist").exists()
        assert sinks.out == b""

    result, sinks = restore(files)
    assert result.ok
    assert (target.workspace / "dist/text").read_bytes() == b"hello " * 2000
    assert sinks.out == b"out\n"
    assert target.cache.lookup(make_key("k")).manifest is None  # nothing imported by a restore
