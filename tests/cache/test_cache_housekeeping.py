"""`haz cache info|clean|clear` behaviour of the local cache (CACHE-021, CACHE-022)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from hazremote.cache import CleanReason, LookupStatus
from hazremote.domain.digest import Digest
from tests.cache.cachekit import Env, make_key, patterns, tree_snapshot

DAY = 86_400.0


def entry_bytes(env: Env, key: Digest) -> int:
    return sum(p.stat().st_size for p in env.cache.entry_dir(key).rglob("*") if p.is_file())


def set_last_used(env: Env, key: Digest, when: float) -> None:
    os.utime(env.cache.entry_dir(key) / "manifest.json", (when, when))


def populated(env: Env) -> dict[str, Digest]:
    """Three valid entries, one corrupt, one of another revision, one orphan staging dir."""
    keys = {name: make_key(name) for name in ("old", "mid", "new", "corrupt", "schema")}
    for name, key in keys.items():
        assert env.store(key, {f"/dist/{name}": name.encode() * 100}).ok
    (env.cache.entry_dir(keys["corrupt"]) / "stderr").unlink()
    manifest = env.cache.entry_dir(keys["schema"]) / "manifest.json"
    doc = json.loads(manifest.read_bytes())
    doc["chapter_revision"] = 99
    manifest.write_text(json.dumps(doc))
    now = env.clock.now
    set_last_used(env, keys["old"], now - 30 * DAY)
    set_last_used(env, keys["mid"], now - 10 * DAY)
    set_last_used(env, keys["new"], now - 1 * DAY)
    orphan = env.cache.root / "ab" / f".tmp-{'ab' * 32}-dead"
    (orphan / "outputs").mkdir(parents=True)
    (orphan / "stdout").write_bytes(b"partial")
    os.utime(orphan, (now - 2 * DAY, now - 2 * DAY))
    return keys


def names(paths: list[Path]) -> set[str]:
    return {p.name for p in paths}


def test_info_counts_entries_bytes_corrupt_and_orphans(env: Env) -> None:
    """CACHE-022: entry count and bytes of valid entries, corrupt/mismatched ones, orphans."""
    keys = populated(env)
    info = env.cache.info()
    assert info.entries == 3
    assert info.bytes == sum(entry_bytes(env, keys[n]) for n in ("old", "mid", "new"))
    assert info.corrupt_entries == 1
    assert info.schema_mismatched_entries == 1
    assert info.orphan_temp_dirs == 1
    assert info.orphan_bytes == len(b"partial")
    assert info.root == env.cache.root


def test_info_of_a_cache_that_does_not_exist_yet(env: Env) -> None:
    """CACHE-022: a fresh workspace has an empty cache, not an error."""
    info = env.cache.info()
    assert (info.entries, info.bytes, info.corrupt_entries, info.orphan_temp_dirs) == (0, 0, 0, 0)


def test_soft_clean_removes_corrupt_mismatched_and_orphans_only(env: Env) -> None:
    """CACHE-022 --soft: corrupt and schema-mismatched entries and leftover temp dirs."""
    keys = populated(env)
    report = env.cache.clean(soft=True)
    reasons = {item.path.name: item.reason for item in report.removed}
    assert reasons == {
        keys["corrupt"].hex: CleanReason.CORRUPT,
        keys["schema"].hex: CleanReason.SCHEMA_MISMATCH,
        f".tmp-{'ab' * 32}-dead": CleanReason.ORPHAN_TEMP,
    }
    assert not report.dry_run
    assert report.remaining_entries == 3
    for name in ("old", "mid", "new"):
        assert env.cache.lookup(keys[name]).hit
    for name in ("corrupt", "schema"):
        assert env.cache.lookup(keys[name]).status is LookupStatus.MISS_NO_ENTRY
    assert env.cache.info().orphan_temp_dirs == 0


def test_max_age_removes_entries_unused_for_longer(env: Env) -> None:
    """CACHE-022 --max-age 7d: by last use (store or restore), not only by creation."""
    keys = populated(env)
    report = env.cache.clean(max_age_s=7 * DAY)
    removed = {item.path.name for item in report.removed}
    assert removed == {keys["old"].hex, keys["mid"].hex}
    assert {item.reason for item in report.removed} == {CleanReason.MAX_AGE}
    assert env.cache.lookup(keys["new"]).hit


def test_max_size_evicts_least_recently_used_first(env: Env) -> None:
    """CACHE-022 --max-size: oldest first until the total fits."""
    keys = {name: make_key(name) for name in ("a", "b", "c")}
    for index, (name, key) in enumerate(keys.items()):
        assert env.store(key, {f"/dist/{name}": bytes([index]) * 1000}).ok
        set_last_used(env, key, env.clock.now - (10 - index) * DAY)
    size = entry_bytes(env, keys["a"])
    report = env.cache.clean(max_size=2 * size)
    assert [(item.path.name, item.reason) for item in report.removed] == [
        (keys["a"].hex, CleanReason.MAX_SIZE)
    ]
    assert report.remaining_bytes <= 2 * size
    assert report.freed_bytes == size


def test_a_restore_counts_as_a_use_for_eviction(env: Env) -> None:
    """CACHE-022: an old entry that was just restored outlives a newer unused one."""
    old, new = make_key("restored-old"), make_key("unused-new")
    assert env.store(old, {"/dist/o": b"o" * 500}).ok
    assert env.store(new, {"/dist/n": b"n" * 500}).ok
    set_last_used(env, old, env.clock.now - 20 * DAY)
    set_last_used(env, new, env.clock.now - 5 * DAY)
    manifest = env.cache.lookup(old).manifest
    assert manifest is not None
    env.cache.restore(
        manifest,
        workspace_root=env.workspace,
        output_patterns=patterns("dist/**"),
        stdout_sink=lambda _: None,
        stderr_sink=lambda _: None,
    )
    report = env.cache.clean(max_size=entry_bytes(env, old))
    assert [item.path.name for item in report.removed] == [new.hex]
    assert env.cache.lookup(old).hit


def test_dry_run_reports_but_deletes_nothing(env: Env) -> None:
    """CACHE-022 --dry-run: the same report, and the cache directory is byte-for-byte intact."""
    populated(env)
    before = tree_snapshot(env.cache.root)
    dry = env.cache.clean(soft=True, max_age_s=7 * DAY, max_size=0, dry_run=True)
    assert dry.dry_run
    assert len(dry.removed) == 6  # corrupt, schema, orphan, 2 by age, 1 by size
    assert tree_snapshot(env.cache.root) == before
    real = env.cache.clean(soft=True, max_age_s=7 * DAY, max_size=0)
    assert [(i.path, i.reason) for i in real.removed] == [(i.path, i.reason) for i in dry.removed]
    assert env.cache.info().entries == 0


def test_clear_removes_everything(env: Env) -> None:
    """CACHE-021: after `haz cache clear` every lookup misses and nothing is left behind."""
    keys = populated(env)
    report = env.cache.clear()
    assert report.freed_bytes > 0
    assert env.cache.root.is_dir()
    assert list(env.cache.root.iterdir()) == []
    for key in keys.values():
        assert env.cache.lookup(key).status is LookupStatus.MISS_NO_ENTRY
    assert env.store(keys["new"], {"/dist/x": b"x"}).ok


def test_unrelated_files_in_the_cache_root_are_left_alone(env: Env) -> None:
    """CACHE-022: clean only touches what the cache layout names (a README stays)."""
    populated(env)
    readme = env.cache.root / "README"
    readme.write_text("shared cache, see wiki\n")
    stray = env.cache.root / "ab" / "notes.txt"
    stray.write_text("x")
    env.cache.clean(soft=True, max_age_s=0)
    assert readme.exists()
    assert stray.exists()
    assert names(list(env.cache.root.iterdir())) >= {"README"}
