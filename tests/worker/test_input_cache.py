"""The worker's input cache (RX-009): verified on entry, bounded, LRU, thread-safe, crash-safe.

Spec coverage: RX-009 (bounded content-addressed LRU cache), RC-004 (verified on entry),
CACHE-017 (whole or absent).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Mapping
from pathlib import Path

import pytest

from hazremote.cache.codec import BlobCorrupt, FetchedBlob, verified_blob
from hazremote.domain.digest import Digest, digest_bytes
from hazremote.domain.model import HashName
from hazremote.remote.transfer import TransferError
from worker.input_cache import InputCache

H = HashName.SHA256


def blob(data: bytes) -> tuple[Digest, int]:
    return digest_bytes(H, data), len(data)


def cache(root: Path, max_bytes: int = 1 << 20, **kw: object) -> InputCache:
    return InputCache(root, max_bytes=max_bytes, hash_name=H, **kw)  # type: ignore[arg-type]


def add(c: InputCache, data: bytes) -> Digest:
    digest, size = blob(data)
    c.add_blob(verified_blob(data, digest=digest, size=size, hash_name=H))
    return digest


def test_a_blob_added_is_found_by_digest_and_size_and_holds_its_bytes(tmp_path: Path) -> None:
    c = cache(tmp_path)
    digest = add(c, b"hello")
    path = c.get(digest, 5)
    assert path is not None
    assert path.read_bytes() == b"hello"
    assert c.get(digest, 6) is None  # another size is another blob
    assert c.get(digest_bytes(H, b"other"), 5) is None


def test_a_file_whose_bytes_do_not_match_its_digest_never_enters(tmp_path: Path) -> None:
    """RC-004: verification on entry, both copying and moving; no temp file is left."""
    c = cache(tmp_path / "c")
    digest, size = blob(b"right")
    source = tmp_path / "src"
    source.write_bytes(b"wrong")
    with pytest.raises(BlobCorrupt, match="does not match its digest"):
        c.add_file(source, digest=digest, size=size)
    with pytest.raises(BlobCorrupt, match="does not match its digest"):
        c.add_file(source, digest=digest, size=size, move=True)
    assert c.get(digest, size) is None
    assert os.listdir(tmp_path / "c" / "tmp") == []
    source.write_bytes(b"right")
    path = c.add_file(source, digest=digest, size=size)
    assert path.read_bytes() == b"right"
    assert source.exists()


def test_least_recently_used_blobs_are_evicted_past_the_bound(tmp_path: Path) -> None:
    """RX-009: using a blob makes it recent; the oldest unused one goes first."""
    c = cache(tmp_path, max_bytes=30)
    a, b = add(c, b"a" * 10), add(c, b"b" * 10)
    add(c, b"c" * 10)
    assert c.get(a, 10) is not None  # a is now the most recent; b the oldest
    d = add(c, b"d" * 10)
    assert c.get(b, 10) is None
    assert not c.path_of(b).exists()
    assert c.get(a, 10) is not None
    assert c.get(d, 10) is not None
    assert c.total_bytes == 30


def test_held_blobs_are_not_evicted_while_an_action_uses_them(tmp_path: Path) -> None:
    c = cache(tmp_path, max_bytes=10)
    a = add(c, b"a" * 10)
    with c.hold([a]):
        b = add(c, b"b" * 10)  # over the bound: b itself is the only unheld blob
        assert c.get(a, 10) is not None
        assert c.get(b, 10) is None
    assert c.total_bytes <= 10


def test_recency_and_contents_survive_a_restart_and_crash_leftovers_are_removed(
    tmp_path: Path,
) -> None:
    """CACHE-017/RX-009: the mtime persists recency; temp files from a crash are removed."""
    c = cache(tmp_path, max_bytes=30)
    a, b, cc = add(c, b"a" * 10), add(c, b"b" * 10), add(c, b"c" * 10)
    for age, digest in ((300, a), (200, b), (100, cc)):
        os.utime(c.path_of(digest), (0, 1_000_000 - age))
    os.utime(c.path_of(a), (0, 1_000_000))  # a used last
    (tmp_path / "tmp" / "in-crashed").write_bytes(b"partial")
    (tmp_path / "blobs" / "not-a-digest").write_bytes(b"x")
    again = cache(tmp_path, max_bytes=30)
    assert os.listdir(tmp_path / "tmp") == []
    assert not (tmp_path / "blobs" / "not-a-digest").exists()
    assert again.total_bytes == 30
    add(again, b"d" * 10)
    assert again.get(b, 10) is None  # the oldest by mtime went first
    assert again.get(a, 10) is not None
    assert again.get(cc, 10) is not None


def test_missing_names_the_blobs_not_held(tmp_path: Path) -> None:
    c = cache(tmp_path)
    a = add(c, b"a")
    other = blob(b"z")
    assert c.missing({a: 1, other[0]: other[1]}) == {other[0]: other[1]}


def test_threads_adding_and_reading_the_same_blobs_agree(tmp_path: Path) -> None:
    """One worker's actions run in threads: racing adds of one blob keep one good copy."""
    c = cache(tmp_path, max_bytes=1 << 20)
    datas = [bytes([i]) * 1000 for i in range(8)]
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for data in datas * 5:
                digest = add(c, data)
                path = c.get(digest, len(data))
                assert path is not None
                assert path.read_bytes() == data
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert c.total_bytes == 8000
    assert sorted(os.listdir(tmp_path / "blobs")) == sorted(digest_bytes(H, d).hex for d in datas)


class FakeDownload:
    """A fake of ``BlobTransfer.download``: answers from a dict, records its calls."""

    def __init__(self, store: Mapping[bytes, bytes], *, as_files: bool, lie: bool = False) -> None:
        self.store = {digest_bytes(H, d): d for d in store.values()}
        self.as_files = as_files
        self.lie = lie
        self.calls: list[dict[Digest, int]] = []

    async def __call__(
        self, blobs: Mapping[Digest, int], dest: Path
    ) -> dict[Digest, FetchedBlob] | TransferError:
        self.calls.append(dict(blobs))
        got: dict[Digest, FetchedBlob] = {}
        for digest, size in blobs.items():
            if digest not in self.store:
                continue
            data = self.store[digest]
            if self.as_files:
                dest.mkdir(parents=True, exist_ok=True)
                (dest / digest.hex).write_bytes(b"X" * size if self.lie else data)
                got[digest] = dest / digest.hex
            else:
                got[digest] = verified_blob(data, digest=digest, size=size, hash_name=H)
        return got


@pytest.mark.parametrize("as_files", [False, True])
def test_ensure_fetches_only_the_missing_blobs_in_one_batch(tmp_path: Path, as_files: bool) -> None:
    datas = {b"1": b"one", b"2": b"two", b"3": b"three"}
    fetch = FakeDownload(datas, as_files=as_files)
    c = cache(tmp_path / "c", fetch=fetch)
    present = add(c, b"one")
    refs = dict(blob(d) for d in datas.values())
    assert asyncio.run(c.ensure(refs)) is None
    assert fetch.calls == [{d: s for d, s in refs.items() if d != present}]
    assert c.missing(refs) == {}
    assert asyncio.run(c.ensure(refs)) is None
    assert len(fetch.calls) == 1
    assert os.listdir(tmp_path / "c" / "tmp") == []


def test_ensure_refuses_fetched_files_with_other_bytes_and_reports_absent_ones(
    tmp_path: Path,
) -> None:
    c = cache(tmp_path, fetch=FakeDownload({b"1": b"one"}, as_files=True, lie=True))
    digest, size = blob(b"one")
    error = asyncio.run(c.ensure({digest: size}))
    assert isinstance(error, TransferError)
    assert "does not match its digest" in error.message
    assert c.get(digest, size) is None
    absent = blob(b"nowhere")
    error = asyncio.run(c.ensure({absent[0]: absent[1]}))
    assert isinstance(error, TransferError)
    assert "not fetched" in error.message
    no_hook = cache(tmp_path / "other")
    error = asyncio.run(no_hook.ensure({absent[0]: absent[1]}))
    assert isinstance(error, TransferError)
    assert "missing" in error.message
