"""Streaming, parallel file hashing (CACHE-002, CACHE-006)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import blake3
import pytest

from hazremote.domain.digest import Digest, digest_bytes
from hazremote.domain.model import HashName
from hazremote.keys.fs import ReadableFile
from hazremote.keys.hashing import DEFAULT_CHUNK_SIZE, FileHasher
from tests.keys.keykit import CountingFs, write

MIB = 1 << 20


@pytest.mark.parametrize("hash_name", list(HashName))
@pytest.mark.parametrize("size", [0, 1, 1023, 1024, 1025, 5000])
def test_file_digest_equals_digest_of_its_bytes(
    tmp_path: Path, hash_name: HashName, size: int
) -> None:
    """CACHE-002: a file's digest is the workspace hash of exactly its bytes, at every size
    around the chunk boundary."""
    data = os.urandom(size)
    path = write(tmp_path, "f", data)
    with FileHasher(fs=CountingFs(), hash_name=hash_name, chunk_size=1024) as hasher:
        assert hasher.hash_file(str(path), size_hint=size) == digest_bytes(hash_name, data)


def test_20_mib_file_is_read_in_bounded_chunks(tmp_path: Path) -> None:
    """Streaming: a 20 MiB file is read through the port in 1 MiB ``readinto`` calls, never
    whole."""
    data = os.urandom(20 * MIB)
    path = write(tmp_path, "big.bin", data)
    fs = CountingFs()
    with FileHasher(fs=fs, hash_name=HashName.BLAKE3) as hasher:
        digest = hasher.hash_file(str(path), size_hint=len(data))
    assert digest == Digest(blake3.blake3(data).digest())
    assert fs.opened == [str(path)]
    assert set(fs.read_sizes) == {DEFAULT_CHUNK_SIZE}
    assert len(fs.read_sizes) == 21  # 20 full chunks and the empty read at end of file


def test_big_files_use_the_big_chunk_and_stay_bounded(tmp_path: Path) -> None:
    """Streaming: files past the big-file threshold use the larger buffer, still chunked."""
    data = os.urandom(3 * MIB + 5)
    path = write(tmp_path, "big.bin", data)
    fs = CountingFs()
    with FileHasher(
        fs=fs, hash_name=HashName.SHA256, big_file_threshold=MIB, big_chunk_size=2 * MIB
    ) as hasher:
        digest = hasher.hash_file(str(path), size_hint=len(data))
    assert digest == Digest(hashlib.sha256(data).digest())
    assert set(fs.read_sizes) == {2 * MIB}
    assert len(fs.read_sizes) == 3


def test_hash_many_keeps_order_and_reports_each_failure(tmp_path: Path) -> None:
    """Parallel hashing: results come back in input order; an unreadable file is its error."""
    files: list[tuple[str, int]] = []
    expected: list[Digest | None] = []
    for i in range(40):
        data = os.urandom(i * 997)
        files.append((str(write(tmp_path, f"f{i}", data)), len(data)))
        expected.append(digest_bytes(HashName.BLAKE3, data))
    files.insert(7, (str(tmp_path / "missing"), 0))
    expected.insert(7, None)
    with FileHasher(fs=CountingFs(), hash_name=HashName.BLAKE3, workers=2) as hasher:
        results = hasher.hash_many(files)
    assert len(results) == len(files)
    for got, want in zip(results, expected, strict=True):
        if want is None:
            assert isinstance(got, FileNotFoundError)
        else:
            assert got == want


def test_hash_many_pools_large_files_and_keeps_small_ones_on_the_caller(tmp_path: Path) -> None:
    """Parallel hashing: files of 64 KiB and more run on the pool's threads, small files on the
    calling thread (where extra threads would only contend for the GIL)."""
    import threading

    opened_by: dict[str, str] = {}

    class _ThreadNoting(CountingFs):
        def open_read(self, path: str) -> ReadableFile:
            opened_by[Path(path).name] = threading.current_thread().name
            return super().open_read(path)

    files = [(str(write(tmp_path, f"big{i}", os.urandom(100 << 10))), 100 << 10) for i in range(4)]
    files += [(str(write(tmp_path, f"small{i}", b"x" * 100)), 100) for i in range(10)]
    with FileHasher(fs=_ThreadNoting(), hash_name=HashName.BLAKE3, workers=2) as hasher:
        results = hasher.hash_many(files)
    assert results == [digest_bytes(HashName.BLAKE3, Path(p).read_bytes()) for p, _ in files]
    caller = threading.current_thread().name
    assert all(opened_by[f"big{i}"].startswith("haz-hash") for i in range(4))
    assert all(opened_by[f"small{i}"] == caller for i in range(10))
