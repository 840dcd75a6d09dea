"""Local cache store and restore speed (CACHE-017, CACHE-019): 1,000 entries x 10 outputs.

Small build-output-like files (JS, source maps, declarations, object files, assets; 300 B to
16 kB). Prints medians of:

* store, with ``FsyncPolicy.NONE`` and ``FsyncPolicy.FULL`` (the fsync decision);
* restore (lookup + verified restore into an empty workspace), in files per second, next to
  ``cp -r`` of the same files measured in the same run;
* restore when every output is already current (the common "nothing changed" hit), hashing
  the existing files, and answered by a stat-cache callback.
"""

from __future__ import annotations

import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._util import median_seconds, work_dir
from bench.bench_zstd_level import GENERATORS
from hazremote.cache import FsyncPolicy, LocalCache, OutputFile
from hazremote.cache.tier import KnownDigests
from hazremote.domain.digest import Digest, digest_bytes
from hazremote.domain.model import CommandAction, HashName
from hazremote.domain.patterns import PathPattern, parse_pattern
from hazremote.keys.components import KeyComponents

ENTRIES = 1_000
OUTPUTS = 10
FULL_FSYNC_ENTRIES = 200  # FULL is slow: measured on a slice, reported per entry
HASH = HashName.BLAKE3


class Vouched:
    """A :class:`KnownDigests` that vouches for every recorded output (a warm stat cache)."""

    def __init__(self, digests: dict[str, Digest]) -> None:
        self._digests = digests

    def now_ns(self) -> int:
        return time.time_ns()

    def lookup(self, path: str, st: os.stat_result) -> Digest | None:
        del st
        return self._digests.get(path)

    def record(self, path: str, st: os.stat_result, digest: Digest, *, observed_ns: int) -> None:
        del path, st, digest, observed_ns


def small_file(rng: random.Random) -> bytes:
    weights = [w for _, w, _ in GENERATORS]
    generate = rng.choices(GENERATORS, weights=weights)[0][0]
    return generate(rng, int(300 * (16_000 / 300) ** rng.random()))


def write_sources(root: Path, rng: random.Random) -> dict[int, list[OutputFile]]:
    entries: dict[int, list[OutputFile]] = {}
    for i in range(ENTRIES):
        outputs = []
        for j in range(OUTPUTS):
            rel = f"p{i:04d}/dist/f{j}.js"
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(small_file(rng))
            if j == 0:
                os.chmod(path, 0o755)
            outputs.append(OutputFile(path=f"/{rel}", source=path))
        entries[i] = outputs
    return entries


def key_of(i: int) -> Digest:
    return digest_bytes(HASH, f"entry-{i}".encode())


def store_all(
    cache: LocalCache, entries: dict[int, list[OutputFile]], spool: Path, count: int
) -> None:
    components = KeyComponents(action=CommandAction(argv=("build",)))
    for i in range(count):
        result = cache.store(
            key=key_of(i),
            components=components,
            stdout=spool,
            stderr=spool,
            outputs=entries[i],
            duration_ms=1,
            producer="bench",
        )
        assert result.ok, result.warning


def main() -> None:
    root = work_dir("restore")
    rng = random.Random(11)
    sources = root / "src"
    entries = write_sources(sources, rng)
    total_bytes = sum(f.source.stat().st_size for files in entries.values() for f in files)
    files = ENTRIES * OUTPUTS
    print(f"{ENTRIES} entries x {OUTPUTS} outputs = {files} files, {total_bytes / 1e6:.1f} MB")
    spool = root / "spool"
    spool.write_bytes(b"compiled 10 files in 0.4s\n")

    # -- store: the fsync decision ----------------------------------------------------------
    cache_ids = iter(range(1_000_000))

    def fresh_cache(name: str, fsync: FsyncPolicy) -> LocalCache:
        path = root / f"{name}-{next(cache_ids)}"  # fresh, see the note on discards below
        os.sync()
        return LocalCache(path, hash_name=HASH, chapter_revision=0, fsync=fsync)

    # The two policies alternate run by run, so that background writeback (of the sources just
    # written, or of other processes) weighs on both alike.
    caches: dict[str, LocalCache] = {}
    samples: dict[FsyncPolicy, list[float]] = {FsyncPolicy.NONE: [], FsyncPolicy.FULL: []}
    for _ in range(5):
        for policy, count in ((FsyncPolicy.NONE, ENTRIES), (FsyncPolicy.FULL, FULL_FSYNC_ENTRIES)):
            cache = fresh_cache(f"cache-{policy.value}", policy)
            start = time.perf_counter()
            store_all(cache, entries, spool, count)
            samples[policy].append(time.perf_counter() - start)
            caches[policy.value] = cache
    t_none = statistics.median(samples[FsyncPolicy.NONE])
    t_full = statistics.median(samples[FsyncPolicy.FULL])
    per_none, per_full = t_none / ENTRIES, t_full / FULL_FSYNC_ENTRIES
    print(
        f"store fsync=none: {1 / per_none:7.0f} entries/s {OUTPUTS / per_none:8.0f} files/s"
        f"  ({per_none * 1e3:.2f} ms/entry)"
    )
    print(
        f"store fsync=full: {1 / per_full:7.0f} entries/s {OUTPUTS / per_full:8.0f} files/s"
        f"  ({per_full * 1e3:.2f} ms/entry, {per_full / per_none:.1f}x slower)"
    )

    # -- restore into an empty workspace vs cp -r -------------------------------------------
    cache = caches["none"]
    cache_bytes = sum(p.stat().st_size for p in cache.root.rglob("*") if p.is_file())
    print(f"cache size on disk (file sizes): {cache_bytes / 1e6:.1f} MB")
    patterns: dict[int, list[PathPattern]] = {
        i: [parse_pattern(f"p{i:04d}/dist/**", project_dir="")] for i in range(ENTRIES)
    }
    # Every timed run writes into a fresh directory: deleting 10,000 files between runs makes
    # the next run pay for the filesystem's discards (the root fs is mounted with `discard`).
    run_ids = iter(range(1_000_000))
    workspace = root / "ws-0"

    def discard(_: bytes) -> None:
        return None

    def restore_all(known: KnownDigests | None = None) -> None:
        for i in range(ENTRIES):
            found = cache.lookup(key_of(i))
            assert found.manifest is not None
            result = cache.restore(
                found.manifest,
                workspace_root=workspace,
                output_patterns=patterns[i],
                stdout_sink=discard,
                stderr_sink=discard,
                known_digests=known,
            )
            assert result.ok, result.message

    def empty_workspace() -> None:
        nonlocal workspace
        workspace = root / f"ws-{next(run_ids)}"
        workspace.mkdir()
        os.sync()

    copy_dest = root / "copy-0"

    def empty_copy() -> None:
        nonlocal copy_dest
        copy_dest = root / f"copy-{next(run_ids)}"
        os.sync()

    def copy_all() -> None:
        subprocess.run(["cp", "-r", str(sources), str(copy_dest)], check=True)

    # Restore and cp alternate, so each pair meets the same filesystem weather; the ratio is
    # taken per pair.
    restores, copies = [], []
    for _ in range(7):
        restores.append(median_seconds(restore_all, runs=1, setup=empty_workspace))
        copies.append(median_seconds(copy_all, runs=1, setup=empty_copy))
    t_restore, t_copy = statistics.median(restores), statistics.median(copies)
    ratio = statistics.median(r / c for r, c in zip(restores, copies, strict=True))
    print(f"restore (empty workspace): {files / t_restore:8.0f} files/s  ({t_restore:.2f} s)")
    print(f"cp -r of the same files:   {files / t_copy:8.0f} files/s  ({t_copy:.2f} s)")
    print(f"restore time / cp -r time: {ratio:8.1f}x (median of 7 adjacent pairs)")

    # -- restore when every output is already current -----------------------------------------
    digests = {
        o.path: o.hash
        for i in range(ENTRIES)
        for o in (cache.lookup(key_of(i)).manifest.outputs)  # type: ignore[union-attr]
    }
    t_current_hash = median_seconds(restore_all, runs=5)
    t_current_stat = median_seconds(lambda: restore_all(Vouched(digests)), runs=5)
    print(f"restore, outputs current, hashed:        {files / t_current_hash:8.0f} files/s")
    print(f"restore, outputs current, stat callback: {files / t_current_stat:8.0f} files/s")
    lookups = median_seconds(lambda: [cache.lookup(key_of(i)) for i in range(ENTRIES)], runs=5)
    print(f"lookup alone: {ENTRIES / lookups:8.0f} lookups/s ({lookups / ENTRIES * 1e6:.0f} µs)")

    shutil.rmtree(root, ignore_errors=True)  # tens of thousands of files: do not keep them


if __name__ == "__main__":
    main()
