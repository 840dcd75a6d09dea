"""Temp files of writes killed mid-way: ``gc`` and the service's start-up remove the old ones.

Spec coverage:
* OPS-003 — ``haz-cache-service gc`` also removes ``.tmp-*`` files of dead writes untouched
  for ``--temp-grace`` (default 1h); ``--blob-grace`` never reaches them (issue 13, item 7).
* SVC-001/RC-005 — a fresh temp file (a write that may be in flight) is never removed, by gc
  or at start-up (issue 13, item 7).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import zstandard

from cache_service.storage._layout import blob_name, manifest_name
from cache_service.storage.base import BlobRef
from cache_service.storage.factory import StorageConfig, open_storage
from hazremote.domain.digest import digest_bytes
from tests.cache_service.server.serverkit import HASH
from tests.cache_service.server.test_command import COMMAND, Service

TWO_HOURS_AGO = -2 * 3600.0


@dataclass(frozen=True, kw_only=True)
class Planted:
    old: tuple[Path, ...]
    fresh: tuple[Path, ...]
    blob: Path


def plant(store: Path) -> Planted:
    """A store with one published blob, and temp files beside blobs and manifests as a
    SIGKILLed write leaves them: two untouched for two hours, two just written."""
    data = b"published\n"
    ref = BlobRef(hash_name=HASH, digest=digest_bytes(HASH, data), size=len(data))
    blobs, _ = open_storage(StorageConfig(url=str(store)))
    blobs.write(ref, [zstandard.ZstdCompressor().compress(data)])
    blob = store / blob_name(ref)
    manifest_dir = (store / manifest_name("main", HASH, ref.digest)).parent
    manifest_dir.mkdir(parents=True)
    old = (blob.parent / ".tmp-0123abcd", manifest_dir / ".tmp-4567ef01")
    fresh = (blob.parent / ".tmp-89abcdef", manifest_dir / ".tmp-fedcba98")
    for path in (*old, *fresh):
        path.write_bytes(b"x" * 4096)
    stamp = time.time() + TWO_HOURS_AGO
    for path in old:
        os.utime(path, (stamp, stamp))
    return Planted(old=old, fresh=fresh, blob=blob)


def gc(store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [COMMAND, "gc", *args, "--storage", str(store)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_gc_removes_old_temp_files_and_keeps_fresh_ones(tmp_path: Path) -> None:
    store = tmp_path / "store"
    planted = plant(store)

    dry = gc(store, "--blob-grace", "0s", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "2 stale temp file(s) (8192 bytes)" in dry.stdout
    assert all(p.exists() for p in (*planted.old, *planted.fresh))

    done = gc(store, "--blob-grace", "0s")
    assert done.returncode == 0, done.stderr
    assert "deleted 0 manifest(s)" in done.stdout
    assert "2 stale temp file(s) (8192 bytes)" in done.stdout
    assert not any(p.exists() for p in planted.old)
    assert all(p.exists() for p in planted.fresh)  # --blob-grace 0s never reaches them


def test_temp_grace_is_configurable_with_a_safe_floor(tmp_path: Path) -> None:
    store = tmp_path / "store"
    planted = plant(store)
    kept = gc(store, "--temp-grace", "3h")
    assert kept.returncode == 0, kept.stderr
    assert "0 stale temp file(s)" in kept.stdout
    assert all(p.exists() for p in planted.old)

    too_short = gc(store, "--temp-grace", "1m")
    assert too_short.returncode == 2
    assert "temp" in too_short.stderr
    assert all(p.exists() for p in planted.old)


def test_service_start_removes_old_temp_files_and_keeps_fresh_ones(tmp_path: Path) -> None:
    store = tmp_path / "store"
    planted = plant(store)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAZ_CACHE_")}
    service = Service("--listen", "127.0.0.1:0", "--storage", str(store), env=env)
    try:
        service.wait_for("listening on ")
        while True:  # bounded: each line waits at most 30 s, and the process logs few
            line = service.lines.get(timeout=30)
            assert line is not None, "the service ended before sweeping"
            if '"event": "removed stale temp files"' in line:
                break
        assert json.loads(line)["files"] == 2
        assert not any(p.exists() for p in planted.old)
        assert all(p.exists() for p in planted.fresh)
        assert planted.blob.exists()
    finally:
        service.proc.send_signal(signal.SIGTERM)
        service.proc.wait(timeout=30)
