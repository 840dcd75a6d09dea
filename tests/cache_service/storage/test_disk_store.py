"""Disk-leaf specifics the contract cannot see (SVC-002 paths, atomic publish, fsync flag)."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from pathlib import Path

import pytest

from cache_service.storage.base import StorageError
from cache_service.storage.disk import DiskBlobStore, DiskManifestStore
from cache_service.storage.verifying import VerifyingBlobStore
from hazremote.domain.digest import digest_bytes
from hazremote.domain.model import HashName
from tests.cache_service.storage.conftest import disk_names, make_blob


def test_fsync_mode_writes_the_same_layout(tmp_path: Path) -> None:
    """SVC-002: with fsync on, blobs and manifests land at the same v1 paths, no temp files."""
    blobs = VerifyingBlobStore(inner=DiskBlobStore(tmp_path, fsync=True))
    manifests = DiskManifestStore(tmp_path, fsync=True)
    blob = make_blob(b"durable" * 100)
    blobs.write(blob.ref, [blob.stored])
    key = blob.ref.digest
    assert manifests.put_if_absent("main", HashName.BLAKE3, key, b"doc") is True
    manifests.replace("main", HashName.BLAKE3, key, b"doc2")
    hexd = key.hex
    assert disk_names(tmp_path) == {
        f"v1/cas/blake3/{hexd[:2]}/{hexd}-{blob.ref.size}",
        f"v1/ns/main/ac/blake3/{hexd[:2]}/{hexd}",
    }


def test_a_half_written_blob_is_never_visible_under_its_name(tmp_path: Path) -> None:
    """§6: while a write is in progress only a .tmp- file exists; the final name appears whole."""
    store = DiskBlobStore(tmp_path)
    blob = make_blob(b"q" * 10_000)
    final = tmp_path / f"v1/cas/blake3/{blob.ref.digest.hex[:2]}/{blob.ref.digest.hex}-10000"
    seen_during_write: list[set[str]] = []

    def chunks() -> Iterator[bytes]:
        yield blob.stored[:5]
        seen_during_write.append(disk_names(tmp_path))
        assert not final.exists()
        yield blob.stored[5:]

    store.write(blob.ref, chunks())
    assert all(name.rsplit("/", 1)[1].startswith(".tmp-") for name in seen_during_write[0])
    assert final.read_bytes() == blob.stored
    assert [info.ref for info in store.iterate()] == [blob.ref]


def test_io_failure_is_a_storage_error(tmp_path: Path) -> None:
    """SVC-001: an unwritable store reports StorageError naming the path."""
    (tmp_path / "v1").write_text("a file where a directory should be")
    store = DiskBlobStore(tmp_path)
    blob = make_blob()
    with pytest.raises(StorageError, match="cannot write blob"):
        store.write(blob.ref, [blob.stored])


def _race(root: str, index: int) -> bool:
    key = digest_bytes(HashName.BLAKE3, b"cross-process")
    return DiskManifestStore(Path(root)).put_if_absent(
        "main", HashName.BLAKE3, key, f"writer-{index}".encode()
    )


def test_put_if_absent_is_race_free_across_processes(tmp_path: Path) -> None:
    """SEC-004: replicas sharing a directory: exactly one process's put wins."""
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        results = pool.starmap(_race, [(str(tmp_path), i) for i in range(8)])
    assert results.count(True) == 1
    key = digest_bytes(HashName.BLAKE3, b"cross-process")
    stored = DiskManifestStore(tmp_path).get("main", HashName.BLAKE3, key)
    assert stored == f"writer-{results.index(True)}".encode()
