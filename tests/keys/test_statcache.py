"""The stat cache: reuse of digests, invalidation, racy timestamps, corrupt files (CACHE-006)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hazremote.domain.digest import Digest, digest_bytes
from hazremote.domain.model import HashName
from hazremote.keys.fs import FileStat, Filesystem, OsFilesystem, StatValues
from hazremote.keys.statcache import (
    DEFAULT_RACY_MARGIN_NS,
    MAGIC,
    StatCache,
    statcache_path,
)
from tests.keys.keykit import CountingFs, make_task, open_deriver, settle, write

H = HashName.BLAKE3
SEC = 1_000_000_000
DAY = 86_400 * SEC


def _d(data: bytes) -> Digest:
    return digest_bytes(H, data)


def _derive_inputs(root: Path, fs: Filesystem, *patterns: str) -> tuple[object, ...]:
    with open_deriver(root, fs=fs) as deriver:
        return deriver.inputs(make_task(inputs=patterns))


def _warm(root: Path, *patterns: str) -> None:
    """One run that hashes everything and saves the stat cache, after the FS clock moved on."""
    settle(root)
    _derive_inputs(root, OsFilesystem(), *patterns)


# --- reuse -----------------------------------------------------------------------------------


def test_unchanged_files_are_not_read_again_in_the_next_run(tmp_path: Path) -> None:
    """CACHE-006: a file whose stat is unchanged is not re-read; its digest comes from the
    persisted stat cache."""
    for i in range(10):
        write(tmp_path, f"lib/src/f{i}.c", f"file {i}\n")
    _warm(tmp_path, "src/*.c")
    assert os.path.exists(statcache_path(str(tmp_path), H))
    fs = CountingFs()
    files = _derive_inputs(tmp_path, fs, "src/*.c")
    assert len(files) == 10
    assert fs.opened == []  # not one file read
    assert fs.count("write_atomic") == 0  # nothing changed: nothing rewritten


def test_the_stat_cache_is_per_hash_function(tmp_path: Path) -> None:
    """CACHE-002: digests of one function are never served for another."""
    write(tmp_path, "lib/a.c", b"a")
    _warm(tmp_path, "a.c")
    fs = CountingFs()
    with open_deriver(tmp_path, fs=fs, hash_name=HashName.SHA256) as deriver:
        files = deriver.inputs(make_task(inputs=("a.c",)))
    assert files[0].digest == digest_bytes(HashName.SHA256, b"a")
    assert fs.opened == [str(tmp_path / "lib" / "a.c")]


# --- invalidation ------------------------------------------------------------------------------


def test_content_and_size_change_is_re_hashed(tmp_path: Path) -> None:
    """CACHE-006: a changed file (size differs) is read again and gets its new digest."""
    path = write(tmp_path, "lib/a.c", b"one")
    _warm(tmp_path, "a.c")
    path.write_bytes(b"three")
    fs = CountingFs()
    files = _derive_inputs(tmp_path, fs, "a.c")
    assert fs.opened == [str(path)]
    assert files == (_input("/lib/a.c", b"three"),)


def test_same_size_rewrite_with_mtime_set_back_is_re_hashed(tmp_path: Path) -> None:
    """Racy git: content changed, size unchanged, mtime restored with ``os.utime`` — the cache
    must not serve the old digest (the ctime, which utime cannot restore, gives it away)."""
    path = write(tmp_path, "lib/a.c", b"aaaa")
    _warm(tmp_path, "a.c")
    before = os.stat(path)
    path.write_bytes(b"bbbb")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(path).st_mtime_ns == before.st_mtime_ns
    assert os.stat(path).st_size == before.st_size
    files = _derive_inputs(tmp_path, OsFilesystem(), "a.c")
    assert files == (_input("/lib/a.c", b"bbbb"),)


def test_mode_change_is_seen(tmp_path: Path) -> None:
    """CACHE-006: chmod +x flips the executable bit in the key (the mode is in the stat key)."""
    path = write(tmp_path, "lib/run", b"x", mode=0o644)
    _warm(tmp_path, "run")
    path.chmod(0o755)
    files = _derive_inputs(tmp_path, OsFilesystem(), "run")
    assert files == (_input("/lib/run", b"x", executable=True),)


def _input(path: str, data: bytes, *, executable: bool = False) -> object:
    from hazremote.keys.components import InputFile

    return InputFile(path=path, executable=executable, digest=_d(data), size=len(data))


# --- racy timestamps, with stats fully under the test's control --------------------------------


class _FrozenStatFs(CountingFs):
    """Reports fixed stats for chosen paths, whatever their content (a same-tick rewrite)."""

    def __init__(self, frozen: dict[str, FileStat]) -> None:
        super().__init__()
        self.frozen = frozen

    def stat(self, path: str) -> FileStat:
        return self.frozen.get(path) or super().stat(path)

    def lstat(self, path: str) -> FileStat:
        return self.frozen.get(path) or super().lstat(path)


T0 = 1_700_000_000 * SEC


def _frozen(size: int, *, mtime_ns: int = T0) -> StatValues:
    return StatValues(
        st_mode=0o100644,
        st_ino=42,
        st_dev=1,
        st_size=size,
        st_mtime_ns=mtime_ns,
        st_ctime_ns=mtime_ns,
    )


def _run_frozen(root: Path, clock_ns: int) -> tuple[CountingFs, tuple[object, ...]]:
    fs = _FrozenStatFs({str(root / "lib" / "a.c"): _frozen(4)})
    with open_deriver(root, fs=fs, clock=lambda: clock_ns) as deriver:
        files = deriver.inputs(make_task(inputs=("a.c",)))
    return fs, files


def test_insert_rule_racy_file_is_not_trusted_next_run(tmp_path: Path) -> None:
    """Racy git (insert rule): a file hashed within the racy margin of its mtime is re-read
    next run, so a same-size rewrite in the same timestamp tick is detected."""
    path = write(tmp_path, "lib/a.c", b"aaaa")
    _, first = _run_frozen(tmp_path, T0 + 1_000_000)  # hashed 1 ms after its mtime
    assert first == (_input("/lib/a.c", b"aaaa"),)
    path.write_bytes(b"bbbb")  # same size, and the fake stat says: same mtime/ctime/inode
    fs, second = _run_frozen(tmp_path, T0 + 10 * SEC)
    assert fs.opened == [str(path)]
    assert second == (_input("/lib/a.c", b"bbbb"),)


def test_entries_older_than_the_margin_are_trusted(tmp_path: Path) -> None:
    """Contrast for the racy tests: with an old mtime the cache is trusted and nothing is read
    (so an identical stat alone is what decides, and the racy rules are what protect)."""
    write(tmp_path, "lib/a.c", b"aaaa")
    _run_frozen(tmp_path, T0 + 10 * SEC)
    settle(tmp_path)
    fs, files = _run_frozen(tmp_path, T0 + 20 * SEC)
    assert fs.opened == []
    assert files == (_input("/lib/a.c", b"aaaa"),)


class _FakeDiskFs:
    """An in-memory Filesystem for StatCache persistence with a settable file mtime."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.mtime_ns = 0
        self.fail_writes = False

    def stat(self, path: str) -> FileStat:
        if path not in self.files:
            raise FileNotFoundError(path)
        return StatValues(0o100644, 1, 1, len(self.files[path]), self.mtime_ns, self.mtime_ns)

    def read_bytes(self, path: str) -> bytes:
        if path not in self.files:
            raise FileNotFoundError(path)
        return self.files[path]

    def write_atomic(self, path: str, data: bytes) -> None:
        if self.fail_writes:
            raise OSError(30, "Read-only file system", path)
        self.files[path] = data


def _cache(fs: _FakeDiskFs, *, clock_ns: int) -> StatCache:
    return StatCache.load(
        fs, "/ws/.haz/state/statcache-blake3.bin", hash_name=H, clock=lambda: clock_ns
    )


def _save(cache: StatCache, fs: _FakeDiskFs) -> bool:
    return cache.save(fs, "/ws/.haz/state/statcache-blake3.bin")


@pytest.mark.parametrize(
    ("snapshot_ns", "trusted"),
    [(T0 - 1, False), (T0, False), (T0 + 1, True)],
    ids=["older-snapshot", "same-tick", "later"],
)
def test_snapshot_rule_entry_not_older_than_cache_write_is_re_hashed(
    snapshot_ns: int, trusted: bool
) -> None:
    """Racy git (snapshot rule): a loaded entry whose mtime is not strictly older than the time
    the cache file was written is not trusted."""
    disk = _FakeDiskFs()
    writer = _cache(disk, clock_ns=T0 + 10 * SEC)
    assert writer.record("/a", _frozen(4), _d(b"aaaa"), observed_ns=T0 + 10 * SEC)
    assert _save(writer, disk)
    disk.mtime_ns = snapshot_ns  # when the file system says the cache was written
    reader = _cache(disk, clock_ns=T0 + 20 * SEC)
    assert len(reader) == 1
    assert (reader.lookup("/a", _frozen(4)) is not None) is trusted


def test_insert_rule_margin_boundary() -> None:
    """Racy git (insert rule): recorded only when mtime and ctime are older than the margin."""
    cache = StatCache(hash_name=H, clock=lambda: T0)
    st = _frozen(1)
    assert not cache.record("/a", st, _d(b"a"), observed_ns=T0 + DEFAULT_RACY_MARGIN_NS)
    assert cache.lookup("/a", st) is None
    assert cache.record("/a", st, _d(b"a"), observed_ns=T0 + DEFAULT_RACY_MARGIN_NS + 1)
    assert cache.lookup("/a", st) == _d(b"a")
    newer_ctime = st._replace(st_ctime_ns=T0 + SEC)
    assert not cache.record("/b", newer_ctime, _d(b"b"), observed_ns=T0 + 2 * SEC)


@pytest.mark.parametrize(
    "field",
    ["st_mode", "st_ino", "st_size", "st_mtime_ns", "st_ctime_ns"],
    ids=lambda f: f"changed-{f}",
)
def test_any_changed_stat_field_is_a_miss(field: str) -> None:
    """CACHE-006: size, mtime, inode, ctime and mode all guard an entry."""
    cache = StatCache(hash_name=H, clock=lambda: T0)
    st = _frozen(4)
    cache.record("/a", st, _d(b"a"), observed_ns=T0 + 10 * SEC)
    assert cache.lookup("/a", st) == _d(b"a")
    assert cache.lookup("/a", st._replace(**{field: getattr(st, field) + 1})) is None


# --- persistence ---------------------------------------------------------------------------------


def _valid_file(disk: _FakeDiskFs) -> bytes:
    cache = _cache(disk, clock_ns=T0 + 10 * SEC)
    cache.record("/a", _frozen(4), _d(b"a"), observed_ns=T0 + 10 * SEC)
    assert _save(cache, disk)
    return disk.files["/ws/.haz/state/statcache-blake3.bin"]


def _flip_last(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1])


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda data: b"",
        lambda data: b"garbage" * 10,
        lambda data: data[:20],
        lambda data: data[: len(data) // 2],
        lambda data: b"NOTSTAT\x00" + data[8:],
        _flip_last,
        lambda data: data[:8] + b"\x63\x00\x00\x00" + data[12:],  # future format version
    ],
    ids=["empty", "garbage", "short-header", "truncated", "bad-magic", "flipped", "version"],
)
def test_corrupt_cache_file_is_ignored_and_rebuilt(corrupt: object) -> None:
    """A corrupt stat cache is ignored (empty cache, never a crash) and rewritten on save."""
    assert callable(corrupt)
    disk = _FakeDiskFs()
    path = "/ws/.haz/state/statcache-blake3.bin"
    disk.files[path] = corrupt(_valid_file(disk))
    disk.mtime_ns = T0 + 30 * SEC
    cache = _cache(disk, clock_ns=T0 + 40 * SEC)
    assert len(cache) == 0
    assert cache.load_problem is not None
    assert _save(cache, disk)  # rewritten even with no new entries
    assert disk.files[path].startswith(MAGIC)
    assert _cache(disk, clock_ns=T0 + 40 * SEC).load_problem is None


def test_malformed_entries_behind_a_valid_checksum_are_misses_and_dropped() -> None:
    """Never a crash: records of the wrong shape (a bug, or a crafted file) are misses and are
    dropped on the next save."""
    import marshal

    import blake3

    from hazremote.keys.statcache import _HEADER, _RECORD, FORMAT_VERSION

    disk = _FakeDiskFs()
    path = "/ws/.haz/state/statcache-blake3.bin"
    ok = _RECORD.pack(0o100644, 42, 1, T0, T0, (T0 + 40 * SEC) // DAY, _d(b"ok").raw)
    payload = marshal.dumps(("blake3", {"/short": b"xx", "/int": 7, "/ok": ok}))
    checksum = blake3.blake3(payload).digest()
    disk.files[path] = _HEADER.pack(MAGIC, FORMAT_VERSION, marshal.version, checksum) + payload
    disk.mtime_ns = T0 + 30 * SEC
    cache = _cache(disk, clock_ns=T0 + 40 * SEC)
    assert cache.load_problem is None
    assert cache.lookup("/short", _frozen(1)) is None
    assert cache.lookup("/int", _frozen(1)) is None
    cache.record("/new", _frozen(1), _d(b"n"), observed_ns=T0 + 40 * SEC)
    assert _save(cache, disk)
    reloaded = _cache(disk, clock_ns=T0 + 40 * SEC)
    assert len(reloaded) == 2  # /ok and /new survive
    assert reloaded.lookup("/ok", _frozen(1)) == _d(b"ok")


def test_corrupt_cache_file_on_disk_does_not_break_a_run(tmp_path: Path) -> None:
    """End to end: garbage at the stat cache path; the run hashes and repairs the file."""
    write(tmp_path, "lib/a.c", b"a")
    path = Path(statcache_path(str(tmp_path), H))
    path.parent.mkdir(parents=True)
    path.write_bytes(MAGIC + os.urandom(100))
    settle(tmp_path)
    assert _derive_inputs(tmp_path, OsFilesystem(), "a.c") == (_input("/lib/a.c", b"a"),)
    fs = CountingFs()
    _derive_inputs(tmp_path, fs, "a.c")
    assert fs.opened == []


def test_cache_of_another_hash_function_is_foreign() -> None:
    """CACHE-002: a file written for blake3 is not used as a sha256 cache."""
    disk = _FakeDiskFs()
    data = _valid_file(disk)
    disk.files = {"/x": data}
    disk.mtime_ns = T0 + 30 * SEC
    cache = StatCache.load(disk, "/x", hash_name=HashName.SHA256, clock=lambda: T0)
    assert len(cache) == 0
    assert cache.load_problem is not None
    assert "blake3" in cache.load_problem


def test_round_trip_keeps_entries_and_unused_ones_expire() -> None:
    """Entries persist across loads; entries unused for more than 30 days are dropped."""
    disk = _FakeDiskFs()
    now = T0 + 10 * SEC
    cache = _cache(disk, clock_ns=now)
    cache.record("/old", _frozen(1), _d(b"o"), observed_ns=now)
    cache.record("/used", _frozen(2), _d(b"u"), observed_ns=now)
    assert _save(cache, disk)
    disk.mtime_ns = now
    later = now + 31 * DAY
    reloaded = _cache(disk, clock_ns=later)
    assert len(reloaded) == 2
    assert reloaded.lookup("/used", _frozen(2)) == _d(b"u")
    assert _save(reloaded, disk)  # the used entry's day moved
    final = _cache(disk, clock_ns=later)
    assert len(final) == 1
    assert final.lookup("/used", _frozen(2)) == _d(b"u")


def test_save_failure_is_not_an_error() -> None:
    """The stat cache is an optimisation: an unwritable workspace only loses it."""
    disk = _FakeDiskFs()
    disk.fail_writes = True
    cache = _cache(disk, clock_ns=T0 + 10 * SEC)
    cache.record("/a", _frozen(1), _d(b"a"), observed_ns=T0 + 10 * SEC)
    assert _save(cache, disk) is False
