"""The RC-001 backfill process: restored remote hits become local entries in a child process.

Spec coverage: RC-001 (every handed-over entry is imported with the local cache's own rules:
strict parse, blobs verified again, atomic publish), RC-004 (bytes that do not match are
refused with a warning naming the task), and "bad input loses nothing": malformed frames are
refused with a precise message, a child that dies or cannot start costs warnings, never the
run. The child is the real ``python -m hazremote.cache.backfill`` process.
"""

from __future__ import annotations

import io
import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from hazremote.cache import Manifest
from hazremote.cache.backfill import (
    BackfillFrameError,
    ProcessBackfill,
    decode_frame,
    encode_frame,
    read_frame,
    serve,
)
from hazremote.cache.codec import verified_blob
from hazremote.cache.local import CacheOptions, FetchBlob, FetchedBlob, LocalCache, VerifiedBlob
from hazremote.cache.tier import StoreResult
from hazremote.domain.digest import Digest
from tests.cache.cachekit import HASH, Env, make_key
from tests.remote.test_import_entry import leftovers, raw_files, restore_entry, source_entry


def in_memory(files: dict[Digest, Path]) -> dict[Digest, FetchedBlob]:
    return {
        digest: verified_blob(
            path.read_bytes(), digest=digest, size=path.stat().st_size, hash_name=HASH
        )
        for digest, path in files.items()
    }


def entry(origin: Env, label: str, tmp: Path) -> tuple[Manifest, dict[Digest, Path]]:
    manifest = source_entry(origin, label)
    return manifest, raw_files(origin, manifest, tmp / f"raw-{label}")


def test_frames_round_trip_bytes_files_and_cleanup(tmp_path: Path) -> None:
    """The frame carries the label, the document, in-memory and file blobs, the cleanup dir."""
    a, b = make_key("a"), make_key("b")
    frame = encode_frame(
        label="web:build ✓",
        document=b'{"doc": 1}',
        blobs={a: VerifiedBlob(a, b"bytes"), b: tmp_path / "file"},
        cleanup=tmp_path / "own",
    )
    decoded = read_frame(io.BytesIO(frame + (0).to_bytes(4, "big")))
    assert decoded is not None
    assert decoded.label == "web:build ✓"
    assert decoded.document == b'{"doc": 1}'
    assert decoded.blobs == {a: b"bytes", b: tmp_path / "file"}
    assert decoded.cleanup == tmp_path / "own"
    no_cleanup = encode_frame(label="x", document=b"{}", blobs={}, cleanup=None)
    assert decode_frame(no_cleanup[4:]).cleanup is None


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda body: body[:-3], "truncated blob"),
        (lambda body: body + b"\x00", "1 trailing byte"),
        (lambda body: body[:2] + b"\xff" + body[3:], "the label is not UTF-8"),
        # The kind byte precedes the last blob's 4-byte length and its 5-byte payload.
        (lambda body: body[:-10] + b"\x07" + body[-9:], "unknown blob kind 7"),
    ],
    ids=["truncated", "trailing", "label", "kind"],
)
def test_malformed_frames_are_refused_with_the_reason(
    damage: Callable[[bytes], bytes], message: str
) -> None:
    """Bad input: a damaged frame is a BackfillFrameError saying what is wrong."""
    key = make_key("k")
    body = encode_frame(
        label="ab", document=b"{}", blobs={key: VerifiedBlob(key, b"bytes")}, cleanup=None
    )[4:]
    with pytest.raises(BackfillFrameError, match=message):
        decode_frame(damage(body))


def test_a_stream_that_ends_without_its_end_marker_is_refused() -> None:
    with pytest.raises(BackfillFrameError, match="ended without its end"):
        read_frame(io.BytesIO(b""))
    with pytest.raises(BackfillFrameError, match="truncated body"):
        read_frame(io.BytesIO((100).to_bytes(4, "big") + b"short"))


def test_the_child_imports_every_entry_and_removes_cleanup_dirs(
    make_env: Callable[[str], Env], tmp_path: Path
) -> None:
    """RC-001: entries handed over as bytes or as files are local entries after close()."""
    origin, target = make_env("origin"), make_env("target")
    first, first_files = entry(origin, "one", tmp_path)
    second, second_files = entry(origin, "two", tmp_path)
    backfill = ProcessBackfill(target.cache.options, log_dir=tmp_path)
    backfill.submit(label="a:build", manifest=first, blobs=in_memory(first_files), cleanup=None)
    own = tmp_path / "raw-two"
    backfill.submit(
        label="b:build",
        manifest=second,
        blobs=dict(second_files),
        cleanup=own,
        document=second.to_json(),  # as a server would have sent it
    )
    assert backfill.close() == []
    assert not own.exists()
    for label in ("one", "two"):
        assert target.cache.lookup(make_key(label)).manifest is not None
    assert restore_entry(target, "one").out == b"out\n"
    assert (target.workspace / "dist/text").read_bytes() == b"hello " * 2000


def test_bytes_that_do_not_match_are_a_warning_naming_the_task(
    make_env: Callable[[str], Env], tmp_path: Path
) -> None:
    """RC-004: the child verifies the bytes again; a mismatch imports nothing and says so,
    and the other entries still land."""
    origin, target = make_env("origin"), make_env("target")
    bad, bad_files = entry(origin, "bad", tmp_path)
    good, good_files = entry(origin, "good", tmp_path)
    blobs = in_memory(bad_files)
    victim = next(o.hash for o in bad.outputs if o.path == "/dist/noise")
    # A VerifiedBlob whose bytes were damaged after it was made (as a bug would).
    blobs[victim] = VerifiedBlob(victim, os.urandom(5000))
    backfill = ProcessBackfill(target.cache.options, log_dir=tmp_path)
    backfill.submit(label="bad:build", manifest=bad, blobs=blobs, cleanup=None)
    backfill.submit(label="good:build", manifest=good, blobs=in_memory(good_files), cleanup=None)
    warnings = backfill.close()
    assert len(warnings) == 1
    assert warnings[0].startswith("bad:build: could not import remote cache entry")
    assert "does not match its digest" in warnings[0]
    assert target.cache.lookup(make_key("bad")).manifest is None
    assert target.cache.lookup(make_key("good")).manifest is not None
    assert leftovers(target) == []


def test_a_child_that_dies_costs_a_warning_not_the_run(
    make_env: Callable[[str], Env], tmp_path: Path
) -> None:
    """A killed child: close() returns promptly with a warning giving its exit status."""
    origin, target = make_env("origin"), make_env("target")
    manifest, files = entry(origin, "k", tmp_path)
    backfill = ProcessBackfill(target.cache.options, log_dir=tmp_path)
    backfill.start()
    proc = backfill._proc  # the child we started, killed by its PID
    assert proc is not None
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    for _ in range(50):  # enough to fill the pipe if nobody noticed the death
        backfill.submit(label="k:build", manifest=manifest, blobs=in_memory(files), cleanup=None)
    warnings = backfill.close()
    assert len(warnings) == 1
    assert "local-cache backfill process failed (exit status -9)" in warnings[0]
    assert "of 50 never reached it" in warnings[0]


def test_a_child_that_cannot_start_costs_a_warning_and_removes_cleanup_dirs(
    make_env: Callable[[str], Env], tmp_path: Path
) -> None:
    """No log directory (so no child): submits are dropped with one warning at close()."""
    origin, target = make_env("origin"), make_env("target")
    manifest, files = entry(origin, "k", tmp_path)
    backfill = ProcessBackfill(target.cache.options, log_dir=tmp_path / "absent")
    own = tmp_path / "raw-k"
    backfill.submit(label="k:build", manifest=manifest, blobs=dict(files), cleanup=own)
    warnings = backfill.close()
    assert len(warnings) == 1
    assert warnings[0].startswith("could not start the local-cache backfill (FileNotFoundError")
    assert "1 remote hit(s) were not added" in warnings[0]
    assert not own.exists()
    assert target.cache.lookup(make_key("k")).manifest is None


def test_options_describe_the_cache(make_env: Callable[[str], Env]) -> None:
    env = make_env("a")
    options = env.cache.options
    assert isinstance(options, CacheOptions)
    assert options.root == env.cache.root
    assert options.hash_name is HASH


class ExplodingCache(LocalCache):
    """A local cache whose import of one key fails with a bug (not with bad data)."""

    doomed: Digest

    def import_entry(self, manifest: Manifest, fetch_blob: FetchBlob) -> StoreResult:
        if manifest.key == self.doomed:
            raise RuntimeError("a bug in the import")
        return super().import_entry(manifest, fetch_blob)


def test_an_import_that_raises_is_a_warning_and_the_rest_still_land(
    make_env: Callable[[str], Env], tmp_path: Path
) -> None:
    """The child never swallows a failure: an unexpected exception becomes a warning naming
    the task, later frames are still imported, and input cut short exits 2 after them."""
    origin, target = make_env("origin"), make_env("target")
    doomed, doomed_files = entry(origin, "doomed", tmp_path)
    fine, fine_files = entry(origin, "fine", tmp_path)
    options = target.cache.options
    cache = ExplodingCache(
        options.root, hash_name=options.hash_name, chapter_revision=options.chapter_revision
    )
    cache.doomed = doomed.key
    frames = b"".join(
        encode_frame(label=label, document=m.to_json(), blobs=in_memory(files), cleanup=None)
        for label, m, files in (("a:build", doomed, doomed_files), ("b:build", fine, fine_files))
    )
    out = io.StringIO()
    assert serve(cache, io.BytesIO(frames + (0).to_bytes(4, "big")), out) == 0
    assert out.getvalue() == "W a:build: the backfill failed: RuntimeError: a bug in the import\n"
    assert target.cache.lookup(make_key("fine")).manifest is not None
    assert target.cache.lookup(make_key("doomed")).manifest is None
    cut = io.StringIO()
    assert serve(cache, io.BytesIO(frames[:-10]), cut) == 2  # no end marker, last frame cut
