"""Damaged entries are misses, never errors, and never half-restored (CACHE-014..016, 019)."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zstandard

from hazremote.cache import Compression, LookupStatus, RestoreStatus
from hazremote.domain.digest import Digest, digest_bytes
from tests.cache.cachekit import HASH, Env, Sinks, make_key, patterns, tree_snapshot

JS = b"import { a } from './a.js';\nconsole.log(a);\n" * 300  # compressible, > 4 KiB
OUTPUTS = {"/dist/app.js": JS, "/dist/raw.txt": b"0123456789", "/dist/x": b"x"}


def stored(env: Env, label: str = "entry") -> tuple[Digest, Path]:
    key = make_key(label)
    result = env.store(key, OUTPUTS, stdout=b"hello\n", stderr=b"")
    assert result.ok, result.warning
    manifest = result.manifest
    assert manifest is not None
    assert {o.path: o.compression for o in manifest.outputs}["/dist/app.js"] is Compression.ZSTD
    return key, env.cache.entry_dir(key)


def blob(entry: Path, data: bytes) -> Path:
    return entry / "outputs" / digest_bytes(HASH, data).hex


def edit_manifest(entry: Path, mutate: Callable[[dict[str, Any]], None]) -> None:
    path = entry / "manifest.json"
    doc = json.loads(path.read_bytes())
    mutate(doc)
    path.write_text(json.dumps(doc))


def _unknown_field(doc: dict[str, Any]) -> None:
    doc["signature"] = "trust me"


def _revision(doc: dict[str, Any]) -> None:
    doc["chapter_revision"] = 7


def _hash_function(doc: dict[str, Any]) -> None:
    doc["hash_function"] = "sha256"


def _other_key(doc: dict[str, Any]) -> None:
    doc["key"] = make_key("another").hex


LOOKUP_CASES: list[tuple[str, Callable[[Path], object], LookupStatus, str]] = [
    (
        "bad JSON",
        lambda e: (e / "manifest.json").write_bytes(b'{"chapter_revision": 0,'),
        LookupStatus.MISS_CORRUPT,
        "invalid JSON",
    ),
    (
        "unknown field",
        lambda e: edit_manifest(e, _unknown_field),
        LookupStatus.MISS_CORRUPT,
        "unknown field 'signature'",
    ),
    (
        "wrong revision",
        lambda e: edit_manifest(e, _revision),
        LookupStatus.MISS_SCHEMA_MISMATCH,
        "chapter_revision 7",
    ),
    (
        "wrong hash function",
        lambda e: edit_manifest(e, _hash_function),
        LookupStatus.MISS_SCHEMA_MISMATCH,
        "hash_function 'sha256'",
    ),
    (
        "manifest of another key",
        lambda e: edit_manifest(e, _other_key),
        LookupStatus.MISS_CORRUPT,
        "is for key",
    ),
    (
        "missing manifest",
        lambda e: (e / "manifest.json").unlink(),
        LookupStatus.MISS_CORRUPT,
        "no manifest",
    ),
    (
        "missing output blob",
        lambda e: blob(e, b"x").unlink(),
        LookupStatus.MISS_CORRUPT,
        "/dist/x",
    ),
    (
        "missing stdout",
        lambda e: (e / "stdout").unlink(),
        LookupStatus.MISS_CORRUPT,
        "stdout",
    ),
    (
        "truncated raw blob",
        lambda e: blob(e, b"0123456789").write_bytes(b"01234"),
        LookupStatus.MISS_CORRUPT,
        "holds 5 bytes, recorded 10",
    ),
    (
        "grown raw blob",
        lambda e: blob(e, b"0123456789").write_bytes(b"0123456789!"),
        LookupStatus.MISS_CORRUPT,
        "holds 11 bytes",
    ),
    (
        "zstd blob with a garbage header",
        lambda e: blob(e, JS).write_bytes(b"\x00" * 64),
        LookupStatus.MISS_CORRUPT,
        "/dist/app.js",
    ),
    (
        "zstd blob announcing another size",
        lambda e: blob(e, JS).write_bytes(zstandard.ZstdCompressor().compress(JS + b"!")),
        LookupStatus.MISS_CORRUPT,
        f"recorded {len(JS)}",
    ),
    (
        "empty zstd blob",
        lambda e: blob(e, JS).write_bytes(b""),
        LookupStatus.MISS_CORRUPT,
        "/dist/app.js",
    ),
]


@pytest.mark.parametrize(
    ("damage", "status", "detail"),
    [pytest.param(d, s, m, id=name) for name, d, s, m in LOOKUP_CASES],
)
def test_damaged_entries_are_lookup_misses(
    env: Env, damage: Callable[[Path], object], status: LookupStatus, detail: str
) -> None:
    """CACHE-015/016: every failed check is a miss status with a reason, never an exception."""
    key, entry = stored(env)
    damage(entry)
    result = env.cache.lookup(key)
    assert result.status is status
    assert result.manifest is None
    assert detail in result.detail


def test_unreadable_manifest_is_a_corrupt_miss(env: Env) -> None:
    """CACHE-016: an I/O error reading the manifest is a miss too (here: it is a directory)."""
    key, entry = stored(env)
    (entry / "manifest.json").unlink()
    (entry / "manifest.json").mkdir()
    assert env.cache.lookup(key).status is LookupStatus.MISS_CORRUPT


def _restore(env: Env, key: Digest, sinks: Sinks) -> Any:
    found = env.cache.lookup(key)
    assert found.hit, found.detail
    assert found.manifest is not None
    return env.cache.restore(
        found.manifest,
        workspace_root=env.workspace,
        output_patterns=patterns("dist/**"),
        stdout_sink=sinks.stdout.append,
        stderr_sink=sinks.stderr.append,
    )


def _prepare_workspace(env: Env) -> None:
    """An older build is present: the restore would change two files and add one."""
    for path in OUTPUTS:
        (env.workspace / path.lstrip("/")).unlink()
    env.write("/dist/app.js", b"old build")
    env.write("/dist/raw.txt", b"old")


RESTORE_CASES: list[tuple[str, Callable[[Path], object]]] = [
    ("raw blob: right size, wrong bytes", lambda e: blob(e, b"0123456789").write_bytes(b"9" * 10)),
    (
        "zstd blob: right size, wrong bytes",
        lambda e: blob(e, JS).write_bytes(
            zstandard.ZstdCompressor(write_content_size=True).compress(b"y" * len(JS))
        ),
    ),
    (
        "zstd blob truncated after its header",
        lambda e: blob(e, JS).write_bytes(blob(e, JS).read_bytes()[:40]),
    ),
    ("stdout: right size, wrong bytes", lambda e: (e / "stdout").write_bytes(b"HELLO\n")),
    (
        "empty stderr recorded with another digest (not read: its record is checked)",
        lambda e: edit_manifest(e, _stderr_hash_of_something),
    ),
]


def _stderr_hash_of_something(doc: dict[str, Any]) -> None:
    doc["stderr"]["hash"] = digest_bytes(HASH, b"something").hex


@pytest.mark.parametrize("damage", [pytest.param(d, id=name) for name, d in RESTORE_CASES])
def test_wrong_bytes_are_caught_at_restore_and_nothing_visible_changes(
    env: Env, damage: Callable[[Path], object]
) -> None:
    """CACHE-019: stage all, verify all, then rename: a bad blob leaves the workspace as it
    was (no partial outputs, no temp files, no new directories), replays no stream, and the
    entry is removed."""
    key, entry = stored(env)
    damage(entry)
    _prepare_workspace(env)
    before = tree_snapshot(env.workspace)
    sinks = Sinks()

    result = _restore(env, key, sinks)

    assert result.status is RestoreStatus.CORRUPT
    assert result.entry_removed
    assert tree_snapshot(env.workspace) == before
    assert sinks.stdout == []
    assert sinks.stderr == []
    assert env.cache.lookup(key).status is LookupStatus.MISS_NO_ENTRY
    assert list(entry.parent.iterdir()) == []


def test_failed_restore_removes_directories_it_created(env: Env) -> None:
    """CACHE-019: directories created for staging vanish again when verification fails."""
    key = make_key("new-dirs")
    assert env.store(key, {"/dist/deep/new/a": b"a", "/dist/deep/new/b": b"bbbb"}).ok
    blob(env.cache.entry_dir(key), b"bbbb").write_bytes(b"cccc")
    for child in ("dist/deep/new/a", "dist/deep/new/b"):
        (env.workspace / child).unlink()
    for directory in ("dist/deep/new", "dist/deep", "dist"):
        (env.workspace / directory).rmdir()
    result = _restore(env, key, Sinks())
    assert result.status is RestoreStatus.CORRUPT
    assert list(env.workspace.iterdir()) == []


def test_missing_blob_between_lookup_and_restore_is_corrupt(env: Env) -> None:
    """CACHE-019: a blob deleted after the lookup (e.g. by a concurrent clean) is a miss."""
    key, entry = stored(env)
    found = env.cache.lookup(key)
    assert found.manifest is not None
    blob(entry, JS).unlink()
    _prepare_workspace(env)
    before = tree_snapshot(env.workspace)
    result = env.cache.restore(
        found.manifest,
        workspace_root=env.workspace,
        output_patterns=patterns("dist/**"),
        stdout_sink=lambda _: None,
        stderr_sink=lambda _: None,
    )
    assert result.status is RestoreStatus.CORRUPT
    assert "cannot be opened" in result.message
    assert tree_snapshot(env.workspace) == before


def test_mode_of_a_current_output_is_not_fixed_when_the_restore_fails(env: Env) -> None:
    """CACHE-019: even metadata changes wait for the publish step of a verified restore."""
    key = make_key("mode-wait")
    assert env.store(key, {"/dist/run": b"#!/bin/sh\n", "/dist/b": b"bbbb"}).ok
    os.chmod(env.workspace / "dist/run", 0o600)  # current bytes, other mode
    (env.workspace / "dist/b").unlink()
    blob(env.cache.entry_dir(key), b"bbbb").write_bytes(b"cccc")
    result = _restore(env, key, Sinks())
    assert result.status is RestoreStatus.CORRUPT
    assert stat.S_IMODE((env.workspace / "dist/run").stat().st_mode) == 0o600
