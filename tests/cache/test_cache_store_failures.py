"""Stores that crash, race or fail leave no entry a lookup accepts (CACHE-017)."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hazremote.cache import LocalCache, LookupStatus, OutputFile, StoreStatus
from hazremote.domain.digest import Digest
from tests.cache.cachekit import HASH, REVISION, Env, components, make_key

# A child process that stores one entry with three outputs, optionally crashing (SIGKILL) at
# a chosen step of the store, or under a file-size limit (a full disk, as far as write(2) is
# concerned: RLIMIT_FSIZE makes it fail with EFBIG once SIGXFSZ is ignored).
CHILD = textwrap.dedent(
    """
    import json, os, resource, signal, sys
    from pathlib import Path
    from hazremote.cache import LocalCache, OutputFile, local
    from hazremote.cache import codec
    from hazremote.domain.digest import Digest
    from hazremote.domain.model import CommandAction, HashName
    from hazremote.keys.components import KeyComponents

    cache_dir, work, key_hex, mode = sys.argv[1:5]
    work = Path(work)
    cache = LocalCache(Path(cache_dir), hash_name=HashName.BLAKE3, chapter_revision=0)

    def die(*_args, **_kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    if mode == "crash-mid-blobs":
        real = codec.BlobCodec.encode_file
        calls = []
        def encode_then_die(self, source, dest, *, fsync):
            calls.append(source)
            if len(calls) == 4:  # stdout, stderr and one output are staged
                die()
            return real(self, source, dest, fsync=fsync)
        codec.BlobCodec.encode_file = encode_then_die
    elif mode == "crash-before-rename":
        local.LocalCache._publish = die  # the manifest is written, the rename never happens
    elif mode == "disk-full":
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))

    result = cache.store(
        key=Digest.from_hex(key_hex),
        components=KeyComponents(action=CommandAction(argv=("make",)), outputs=("/dist/**",)),
        stdout=work / "stdout",
        stderr=work / "stderr",
        outputs=[OutputFile(path="/dist/" + n, source=work / n) for n in ("a", "b", "c")],
        duration_ms=3,
        producer="child",
    )
    print(json.dumps({"status": result.status.value, "warning": result.warning}))
    print("carried on")
    """
)


def run_child(env: Env, key: Digest, mode: str) -> subprocess.CompletedProcess[str]:
    work = env.tmp / "child"
    work.mkdir(exist_ok=True)
    (work / "stdout").write_bytes(b"out\n")
    (work / "stderr").write_bytes(b"")
    (work / "a").write_bytes(b"a" * 10_000)
    (work / "b").write_bytes(os.urandom(1 << 20))  # incompressible: 1 MiB hits the limit
    (work / "c").write_bytes(b"c")
    return subprocess.run(
        [sys.executable, "-c", CHILD, str(env.cache.root), str(work), key.hex, mode],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def shard_children(env: Env, key: Digest) -> list[str]:
    shard = env.cache.entry_dir(key).parent
    return sorted(p.name for p in shard.iterdir()) if shard.exists() else []


@pytest.mark.parametrize("mode", ["crash-mid-blobs", "crash-before-rename"])
def test_interrupted_store_leaves_no_entry_and_soft_clean_removes_the_leftover(
    env: Env, mode: str
) -> None:
    """CACHE-017/022: a store killed at any step is a miss; after the grace period the staging
    directory is an orphan that `clean --soft` removes (before it, it may be a live store)."""
    key = make_key(mode)
    child = run_child(env, key, mode)
    assert child.returncode == -signal.SIGKILL, child.stderr
    leftovers = shard_children(env, key)
    assert len(leftovers) == 1
    assert leftovers[0].startswith(f".tmp-{key.hex}-")
    staged_manifest = (env.cache.entry_dir(key).parent / leftovers[0] / "manifest.json").exists()
    assert staged_manifest is (mode == "crash-before-rename")

    assert env.cache.lookup(key).status is LookupStatus.MISS_NO_ENTRY
    assert env.cache.info().orphan_temp_dirs == 0  # younger than the grace period
    assert env.cache.clean(soft=True).removed == ()
    assert len(shard_children(env, key)) == 1

    env.clock.now = os.stat(env.cache.entry_dir(key).parent / leftovers[0]).st_mtime + 7200
    assert env.cache.info().orphan_temp_dirs == 1
    report = env.cache.clean(soft=True)
    assert [item.reason.value for item in report.removed] == ["orphan-temp"]
    assert shard_children(env, key) == []
    # The cache works normally afterwards.
    assert env.store(key, {"/dist/a": b"a"}).status is StoreStatus.STORED


def test_disk_full_store_is_a_warning_and_leaves_nothing(env: Env) -> None:
    """CACHE-017: a store failing with EFBIG (RLIMIT_FSIZE, like a full disk) returns a
    warning, removes its partial staging directory, and the caller carries on."""
    key = make_key("disk-full")
    child = run_child(env, key, "disk-full")
    assert child.returncode == 0, child.stderr
    first, second = child.stdout.splitlines()
    outcome = json.loads(first)
    assert outcome["status"] == "failed"
    assert "File too large" in outcome["warning"]
    assert key.hex[:12] in outcome["warning"]
    assert second == "carried on"
    assert shard_children(env, key) == []
    assert env.cache.lookup(key).status is LookupStatus.MISS_NO_ENTRY


def test_missing_output_source_is_a_warning_and_leaves_nothing(env: Env) -> None:
    """CACHE-017: any failure (here: an output vanished) is a warning, never an exception."""
    key = make_key("vanished")
    result = env.cache.store(
        key=key,
        components=components(),
        stdout=env.spool("o", b""),
        stderr=env.spool("e", b""),
        outputs=[
            OutputFile(path="/dist/a", source=env.write("/dist/a", b"a")),
            OutputFile(path="/dist/gone", source=env.workspace / "dist/gone"),
        ],
        duration_ms=1,
        producer="p",
    )
    assert result.status is StoreStatus.FAILED
    assert result.manifest is None
    assert result.warning is not None
    assert "No such file" in result.warning
    assert shard_children(env, key) == []


def test_fifo_output_fails_the_store_without_hanging(env: Env) -> None:
    """CACHE-017: only regular files are stored; a FIFO must not block the run."""
    key = make_key("fifo")
    fifo = env.workspace / "dist" / "pipe"
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)
    result = env.cache.store(
        key=key,
        components=components(),
        stdout=env.spool("o", b""),
        stderr=env.spool("e", b""),
        outputs=[OutputFile(path="/dist/pipe", source=fifo)],
        duration_ms=1,
        producer="p",
    )
    assert result.status is StoreStatus.FAILED
    assert "not a regular file" in (result.warning or "")
    assert shard_children(env, key) == []


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("dist/a", "not workspace-absolute"),
        ("/dist/../a", "'..' segment"),
        ("/.git/hooks/post-checkout", ".git"),
    ],
)
def test_invalid_output_paths_are_not_stored(env: Env, path: str, problem: str) -> None:
    """CACHE-017/SEC-001: what a restore would refuse is never stored."""
    key = make_key(f"bad-path-{path}")
    result = env.cache.store(
        key=key,
        components=components(),
        stdout=env.spool("o", b""),
        stderr=env.spool("e", b""),
        outputs=[OutputFile(path=path, source=env.spool("x", b"x"))],
        duration_ms=1,
        producer="p",
    )
    assert result.status is StoreStatus.FAILED
    assert problem in (result.warning or "")
    assert not env.cache.root.exists() or shard_children(env, key) == []


def _store_concurrently(
    *, cache_dir: str, work: str, key_hex: str, barrier: Any, results: Any, name: str
) -> None:
    cache = LocalCache(Path(cache_dir), hash_name=HASH, chapter_revision=REVISION)
    src = Path(work) / name
    src.mkdir()
    files = {"a.js": b"console.log('same');\n" * 500, "b.bin": bytes(range(256)) * 64}
    outputs = []
    for file_name, data in files.items():
        (src / file_name).write_bytes(data)
        outputs.append(OutputFile(path=f"/dist/{file_name}", source=src / file_name))
    (src / "out").write_bytes(b"built\n")
    barrier.wait()
    result = cache.store(
        key=Digest.from_hex(key_hex),
        components=components(),
        stdout=src / "out",
        stderr=src / "out",
        outputs=outputs,
        duration_ms=1,
        producer=name,
    )
    results.put(result.status.value)


@pytest.mark.parametrize("round_", range(4))
def test_concurrent_stores_of_one_key_from_two_processes_give_one_valid_entry(
    env: Env, round_: int
) -> None:
    """CACHE-017: two real processes store the same key at the same moment: exactly one
    entry results, it is valid, one store reports STORED and the other ALREADY_PRESENT, and
    no staging directory remains."""
    key = make_key(f"race-{round_}")
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    results = context.Queue()
    processes = [
        context.Process(
            target=_store_concurrently,
            kwargs={
                "cache_dir": str(env.cache.root),
                "work": str(env.tmp),
                "key_hex": key.hex,
                "barrier": barrier,
                "results": results,
                "name": f"p{i}",
            },
        )
        for i in range(2)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    statuses = sorted(results.get(timeout=5) for _ in processes)
    assert statuses == ["already-present", "stored"]
    assert shard_children(env, key) == [key.hex]
    found = env.cache.lookup(key)
    assert found.hit
    assert found.manifest is not None
    assert found.manifest.producer in {"p0", "p1"}


def test_interrupt_during_a_store_removes_the_staging_directory(
    env: Env, make_cache: Callable[..., LocalCache]
) -> None:
    """CACHE-017: Ctrl-C mid-store propagates, but leaves no orphan behind (the clock is
    read after the blobs are staged, so an interrupting clock stops the store right there)."""

    def interrupted() -> float:
        raise KeyboardInterrupt

    cache = make_cache(clock=interrupted)
    key = make_key("interrupted")
    with pytest.raises(KeyboardInterrupt):
        cache.store(
            key=key,
            components=components(),
            stdout=env.spool("o", b"out"),
            stderr=env.spool("e", b""),
            outputs=[OutputFile(path="/dist/a", source=env.write("/dist/a", b"a" * 9000))],
            duration_ms=1,
            producer="p",
        )
    assert shard_children(env, key) == []


def test_a_shard_removed_by_another_process_is_created_again(env: Env) -> None:
    """CACHE-017: shard directories are remembered once created; a `haz cache clear` in
    another process between two stores must not make the second fail."""
    first = Digest(bytes([0xAB]) + bytes(31))
    second = Digest(bytes([0xAB]) + bytes(30) + b"\x01")
    assert env.store(first, {"/dist/a": b"a"}).ok
    shutil.rmtree(env.cache.root / "ab")  # what a clear elsewhere does
    result = env.store(second, {"/dist/b": b"b"})
    assert result.ok, result.warning
    assert env.cache.lookup(second).hit
