"""Hostile manifests never write outside the workspace or the declared outputs (SEC-001)."""

from __future__ import annotations

import dataclasses
import stat
from pathlib import Path

import pytest

from hazremote.cache import LookupStatus, OutputRecord, RestoreStatus
from hazremote.domain.digest import digest_bytes
from hazremote.domain.patterns import parse_pattern
from tests.cache.cachekit import (
    HASH,
    Env,
    make_key,
    patterns,
    plant_entry,
    restore,
    tree_snapshot,
)


@pytest.fixture
def outside(env: Env) -> Path:
    """A directory outside the workspace that nothing may touch."""
    path = env.tmp / "outside"
    path.mkdir()
    (path / "keep.txt").write_bytes(b"untouched")
    return path


def test_dot_dot_path_makes_the_lookup_a_miss(env: Env, outside: Path) -> None:
    """SEC-001: a manifest with a '..' segment does not even parse: miss-corrupt."""
    key = make_key("dotdot")
    manifest = plant_entry(env.cache, key, [("/dist/ok", b"ok", 0o644)])
    doc = manifest.to_json().replace(b'"/dist/ok"', b'"/dist/../../outside/evil"')
    (env.cache.entry_dir(key) / "manifest.json").write_bytes(doc)
    result = env.cache.lookup(key)
    assert result.status is LookupStatus.MISS_CORRUPT
    assert "'..' segment" in result.detail


def test_dot_dot_path_in_a_manifest_built_in_memory_is_refused(env: Env, outside: Path) -> None:
    """SEC-001: restore re-checks paths itself (a remote tier may hand it any manifest)."""
    key = make_key("dotdot-mem")
    manifest = plant_entry(env.cache, key, [("/dist/ok", b"evil", 0o644)])
    hostile = dataclasses.replace(
        manifest,
        outputs=(dataclasses.replace(manifest.outputs[0], path="/dist/../../outside/evil"),),
    )
    before = tree_snapshot(env.tmp / "outside")
    result = restore(env, hostile, "**")
    assert result.status is RestoreStatus.UNSAFE
    assert tree_snapshot(env.tmp / "outside") == before
    assert not (outside / "evil").exists()


def test_path_outside_the_declared_outputs_is_refused_and_the_entry_dropped(env: Env) -> None:
    """SEC-001/CACHE-020: a workspace path the task does not declare as output is a miss."""
    env.write("/src/main.py", b"print('mine')\n")
    key = make_key("undeclared")
    manifest = plant_entry(
        env.cache,
        key,
        [("/dist/app.js", b"fine", 0o644), ("/src/main.py", b"import os; os.system('x')", 0o644)],
    )
    before = tree_snapshot(env.workspace)
    result = restore(env, manifest, "dist/**")
    assert result.status is RestoreStatus.UNSAFE
    assert "not matched by the task's declared outputs" in result.message
    assert result.entry_removed
    assert tree_snapshot(env.workspace) == before
    assert env.cache.lookup(key).status is LookupStatus.MISS_NO_ENTRY


def test_negated_patterns_never_allow_a_path(env: Env) -> None:
    """SEC-001: only non-negated patterns declare outputs."""
    key = make_key("negated")
    manifest = plant_entry(env.cache, key, [("/src/x", b"x", 0o644)])
    pattern = patterns("dist/**")
    negated = parse_pattern("!src/x", project_dir="", allow_negation=True)
    result = env.cache.restore(
        manifest,
        workspace_root=env.workspace,
        output_patterns=[*pattern, negated],
        stdout_sink=lambda _: None,
        stderr_sink=lambda _: None,
    )
    assert result.status is RestoreStatus.UNSAFE
    assert not (env.workspace / "src").exists()


@pytest.mark.parametrize("link_at", ["dist", "dist/sub"])
def test_symlinked_parent_directory_is_refused_and_the_outside_is_untouched(
    env: Env, outside: Path, link_at: str
) -> None:
    """SEC-001: an existing parent that is a symlink (pointing outside) makes the entry a
    miss; the outside target directory is untouched, even for outputs elsewhere."""
    if link_at == "dist/sub":
        (env.workspace / "dist").mkdir()
    (env.workspace / link_at).symlink_to(outside, target_is_directory=True)
    key = make_key(f"symlink-{link_at}")
    manifest = plant_entry(
        env.cache,
        key,
        [("/dist/sub/evil.sh", b"#!/bin/sh\nrm -rf ~\n", 0o755), ("/dist/zz", b"z", 0o644)],
    )
    outside_before = tree_snapshot(outside)
    workspace_before = tree_snapshot(env.workspace)
    result = restore(env, manifest)
    assert result.status is RestoreStatus.UNSAFE
    assert "is a symlink" in result.message
    assert tree_snapshot(outside) == outside_before
    assert tree_snapshot(env.workspace) == workspace_before
    # The workspace, not the entry, is at fault: the entry stays for a clean checkout.
    assert not result.entry_removed
    assert env.cache.lookup(key).hit


def test_setuid_setgid_sticky_bits_are_never_restored(env: Env) -> None:
    """SEC-001/CACHE-019: restored modes are masked to 0o777."""
    key = make_key("setuid")
    manifest = plant_entry(
        env.cache,
        key,
        [
            ("/dist/suid", b"a", 0o4755),
            ("/dist/sgid", b"b", 0o2750),
            ("/dist/sticky", b"c", 0o1777),
        ],
    )
    result = restore(env, manifest)
    assert result.status is RestoreStatus.RESTORED
    modes = {
        name: stat.S_IMODE((env.workspace / "dist" / name).stat().st_mode)
        for name in ("suid", "sgid", "sticky")
    }
    assert modes == {"suid": 0o755, "sgid": 0o750, "sticky": 0o777}


def test_setuid_bit_is_stripped_from_an_already_current_output(env: Env) -> None:
    """SEC-001: an unchanged output still ends with the masked mode."""
    key = make_key("setuid-current")
    env.write("/dist/tool", b"t", 0o755)
    manifest = plant_entry(env.cache, key, [("/dist/tool", b"t", 0o6755)])
    result = restore(env, manifest)
    assert (result.status, result.unchanged) == (RestoreStatus.RESTORED, 1)
    assert stat.S_IMODE((env.workspace / "dist/tool").stat().st_mode) == 0o755


@pytest.mark.parametrize("path", ["/.git/hooks/pre-commit", "/dist/.git/config", "/.haz/x.yml"])
def test_outputs_into_git_or_haz_directories_are_refused(env: Env, path: str) -> None:
    """SEC-001 (defence in depth): even a '**' output pattern cannot plant git hooks."""
    key = make_key(f"reserved-{path}")
    manifest = plant_entry(env.cache, key, [(path, b"#!/bin/sh\n", 0o755)])
    result = restore(env, manifest, "**")
    assert result.status is RestoreStatus.UNSAFE
    assert not (env.workspace / path.lstrip("/")).exists()


def test_an_output_nested_under_another_output_is_corrupt(env: Env) -> None:
    """CACHE-019: '/dist/a' as both file and directory cannot be a real run's result."""
    key = make_key("nested")
    manifest = plant_entry(
        env.cache, key, [("/dist/a", b"file", 0o644), ("/dist/a/b", b"x", 0o644)]
    )
    result = restore(env, manifest)
    assert result.status is RestoreStatus.CORRUPT
    assert not (env.workspace / "dist").exists()


def test_lookup_of_a_hostile_but_well_formed_manifest_is_a_hit(env: Env) -> None:
    """CACHE-015 vs CACHE-020: lookup checks form and blobs; only restore knows the task's
    declared outputs, so the refusal happens there."""
    key = make_key("well-formed")
    plant_entry(env.cache, key, [("/etc-like/passwd", b"root::0:0", 0o644)])
    found = env.cache.lookup(key)
    assert found.hit
    assert found.manifest is not None
    assert found.manifest.outputs[0] == OutputRecord(
        path="/etc-like/passwd",
        hash=digest_bytes(HASH, b"root::0:0"),
        size=9,
        mode=0o644,
        compression=found.manifest.outputs[0].compression,
    )
    assert restore(env, found.manifest).status is RestoreStatus.UNSAFE
