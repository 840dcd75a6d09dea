"""``LocalCache.import_entry``: the RC-001 backfill publishes complete, verified entries only.

Spec coverage: RC-001 (a remote entry becomes a local entry), RC-004 (bytes that do not hash
to their record are refused), CACHE-017 (staged, manifest last, atomic publish; nothing left
behind after a failure), CACHE-015 (a manifest of another revision is refused). Fetched
blobs come as files (verified when read) or as ``VerifiedBlob`` bytes kept in memory by the
download (trusted for their own digest only).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from hazremote.cache import Compression, Manifest, RestoreResult, RestoreStatus, StoreStatus
from hazremote.cache.codec import BlobCorrupt
from hazremote.cache.codec import verified_blob as make_verified_blob
from hazremote.cache.local import FetchedBlob, VerifiedBlob
from hazremote.domain.digest import Digest, digest_bytes
from tests.cache.cachekit import HASH, Env, Sinks, make_key


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


def in_memory(files: dict[Digest, Path]) -> dict[Digest, FetchedBlob]:
    """The same blobs as a download keeps them in memory (verified while it reads them)."""
    return {
        digest: verified_blob(path.read_bytes(), digest=digest, size=path.stat().st_size)
        for digest, path in files.items()
    }


def verified_blob(data: bytes, *, digest: Digest, size: int) -> VerifiedBlob:
    return make_verified_blob(data, digest=digest, size=size, hash_name=HASH)


def restore_entry(env: Env, label: str) -> Sinks:
    """Look the entry up in ``env`` and restore it; it must succeed. Returns its streams."""
    found = env.cache.lookup(make_key(label))
    assert found.manifest is not None
    restored, sinks = env.restore(found.manifest)
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
        return target.restore(manifest, fetched=with_files)

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


def test_verified_bytes_in_memory_import_and_restore_like_files(
    make_env: Callable[[str], Env], tmp_path: Path
) -> None:
    """RC-001: blobs a download kept in memory restore and import exactly as files would;
    the small ones are stored as they are, a large compressible one compressed at rest."""
    origin, target = make_env("origin"), make_env("target")
    big = b"compressible line\n" * 10_000  # 180 KB: above the as-is bound
    stored = origin.store(
        make_key("mem"), {"/dist/big": big, "/dist/small": b"small", "/dist/empty": b""}
    )
    assert stored.manifest is not None
    manifest = stored.manifest
    blobs = in_memory(raw_files(origin, manifest, tmp_path / "raw"))
    restored, _ = target.restore(manifest, fetched=blobs)
    assert restored.ok, restored.message
    assert (target.workspace / "dist/big").read_bytes() == big
    result = target.cache.import_entry(manifest, lambda digest, size: blobs[digest])
    assert result.status is StoreStatus.STORED
    assert result.manifest is not None
    by_path = {o.path: o for o in result.manifest.outputs}
    assert by_path["/dist/small"].compression is Compression.NONE
    assert by_path["/dist/big"].compression is Compression.ZSTD
    for path in ("dist/big", "dist/small", "dist/empty"):
        (target.workspace / path).unlink()
    restore_entry(target, "mem")
    assert (target.workspace / "dist/big").read_bytes() == big
    assert (target.workspace / "dist/small").read_bytes() == b"small"


def test_verified_bytes_of_another_blob_are_refused(
    make_env: Callable[[str], Env], tmp_path: Path
) -> None:
    """RC-004: a VerifiedBlob vouches for its own digest only: handed over for another blob
    it fails the restore (CORRUPT, nothing written) and the import (no entry, no staging)."""
    origin, target = make_env("origin"), make_env("target")
    manifest = source_entry(origin, "k")
    blobs = in_memory(raw_files(origin, manifest, tmp_path / "raw"))
    text = next(o.hash for o in manifest.outputs if o.path == "/dist/text")
    noise = next(o.hash for o in manifest.outputs if o.path == "/dist/noise")
    swapped = {**blobs, text: blobs[noise]}
    restored, _ = target.restore(manifest, fetched=swapped)
    assert restored.status is RestoreStatus.CORRUPT
    assert not (target.workspace / "dist").exists()
    result = target.cache.import_entry(manifest, lambda digest, size: swapped[digest])
    assert result.status is StoreStatus.FAILED
    assert "is another blob" in (result.warning or "")
    assert target.cache.lookup(make_key("k")).manifest is None
    assert leftovers(target) == []


def test_verified_blob_refuses_bytes_that_do_not_match() -> None:
    """RC-004: a VerifiedBlob is only made from bytes of the right size and digest."""
    good = verified_blob(b"payload", digest=make_digest(b"payload"), size=7)
    assert good.holds(make_digest(b"payload"), 7)
    with pytest.raises(BlobCorrupt, match="does not match its digest"):
        verified_blob(b"payloaD", digest=make_digest(b"payload"), size=7)
    with pytest.raises(BlobCorrupt, match="does not match its digest"):
        verified_blob(b"payload", digest=make_digest(b"payload"), size=8)


def make_digest(data: bytes) -> Digest:
    return digest_bytes(HASH, data)
