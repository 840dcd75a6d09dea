"""The fault-injecting store decorators: counts, failures, hangs, corrupt reads."""

from __future__ import annotations

import time

import pytest
import zstandard

from cache_service.storage.base import WOULD_BLOCK, BlobRef, StorageError
from cache_service.storage.memory import MemoryBlobStore, MemoryManifestStore
from cache_service.storage.verifying import compress_bytes
from hazremote.domain.digest import digest_bytes
from hazremote.domain.model import HashName
from tests.support.faultstore import LOOKUPS, UPLOADS, Faults, FaultyBlobStore, FaultyManifestStore

HASH = HashName.BLAKE3
DATA = b"hello"
REF = BlobRef(hash_name=HASH, digest=digest_bytes(HASH, DATA), size=len(DATA))


def test_counts_writes_and_fails_only_the_armed_operations() -> None:
    faults = Faults()
    blobs = FaultyBlobStore(MemoryBlobStore(), faults)
    blobs.write(REF, [compress_bytes(DATA)])
    assert faults.written == [REF.digest.raw]
    assert faults.write_chunks == [1]
    faults.fail(UPLOADS)
    with pytest.raises(StorageError):
        blobs.missing([REF])
    reader = blobs.open_read(REF)  # reads are not uploads
    assert reader is not None
    faults.heal()
    assert blobs.missing([REF]) == []
    assert faults.calls["missing"] == 2


def test_a_hang_moves_lookups_off_the_event_loop_and_heal_ends_it() -> None:
    faults = Faults()
    manifests = FaultyManifestStore(MemoryManifestStore(), faults)
    key = digest_bytes(HASH, b"k")
    assert manifests.get_nowait("main", HASH, key) is None
    faults.hang(0.2, LOOKUPS)
    assert manifests.get_nowait("main", HASH, key) is WOULD_BLOCK
    started = time.monotonic()
    assert manifests.get("main", HASH, key) is None
    assert time.monotonic() - started >= 0.2
    faults.heal()
    assert manifests.get("main", HASH, key) is None
    assert faults.calls["manifest_get"] == 3


def test_corrupt_reads_hand_out_a_frame_of_other_bytes() -> None:
    faults = Faults(corrupt_reads=True)
    blobs = FaultyBlobStore(MemoryBlobStore(), faults)
    blobs.write(REF, [compress_bytes(DATA)])
    reader = blobs.open_read(REF)
    assert reader is not None
    frame = reader.read()
    assert zstandard.ZstdDecompressor().decompress(frame) == bytes([DATA[0] ^ 0xFF]) + DATA[1:]
