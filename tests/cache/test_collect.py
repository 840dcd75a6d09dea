"""Output collection (hazremote.cache.collect): files by pattern into output records plus blobs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import zstandard

from hazremote.cache import Compression, OutputFile
from hazremote.cache.codec import BlobCodec
from hazremote.cache.collect import collect, collect_files, matching_files, outputs_problem
from hazremote.domain.digest import digest_bytes
from tests.cache.cachekit import HASH, patterns


def _write(root: Path, path: str, data: bytes, mode: int = 0o644) -> Path:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    target.chmod(mode)
    return target


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    root.mkdir()
    return root


@pytest.fixture
def blobs_dir(tmp_path: Path) -> Path:
    path = tmp_path / "blobs"
    path.mkdir()
    return path


CODEC = BlobCodec(hash_name=HASH, level=3)


def test_matching_files_takes_only_matched_regular_files_and_skips_control_dirs(ws: Path) -> None:
    _write(ws, "/dist/a.js", b"a")
    _write(ws, "/dist/sub/b.js", b"b")
    _write(ws, "/dist/c.txt", b"c")
    _write(ws, "/src/a.js", b"s")
    _write(ws, "/.haz/x.js", b"x")
    _write(ws, "/.git/y.js", b"y")
    os.symlink("nowhere", ws / "dist" / "dangling.js")
    found = matching_files(ws, patterns("/dist/**/*.js", "/**/*.js"))
    assert found == ("/dist/a.js", "/dist/sub/b.js", "/src/a.js")


def test_matching_files_never_collects_restore_staging_names(ws: Path) -> None:
    _write(ws, "/out/x", b"x")
    _write(ws, "/out/.haz-restore-1-abc", b"partial")
    assert matching_files(ws, patterns("/out/**", "/out/.haz-restore-1-abc")) == ("/out/x",)


def test_collect_records_digest_size_mode_and_names_blobs_by_digest(
    ws: Path, blobs_dir: Path
) -> None:
    _write(ws, "/dist/run.sh", b"#!/bin/sh\n", mode=0o755)
    _write(ws, "/dist/data.bin", b"d" * 10_000)
    collected = collect(ws, patterns("/dist/**"), blobs_dir=blobs_dir, codec=CODEC, fsync=False)
    by_path = {r.path: r for r in collected.outputs}
    assert [r.path for r in collected.outputs] == ["/dist/data.bin", "/dist/run.sh"]
    run = by_path["/dist/run.sh"]
    assert run.hash == digest_bytes(HASH, b"#!/bin/sh\n")
    assert (run.size, run.mode, run.compression) == (10, 0o755, Compression.NONE)
    data = by_path["/dist/data.bin"]
    assert data.compression is Compression.ZSTD  # 10 kB of one byte is worth compressing
    blob = collected.blobs[data.hash]
    assert blob.path == blobs_dir / data.hash.hex
    assert zstandard.ZstdDecompressor().decompress(blob.path.read_bytes()) == b"d" * 10_000
    assert sorted(os.listdir(blobs_dir)) == sorted(d.hex for d in collected.blobs)


def test_outputs_of_equal_content_share_one_blob(ws: Path, blobs_dir: Path) -> None:
    _write(ws, "/dist/a", b"same")
    _write(ws, "/dist/b", b"same")
    collected = collect(ws, patterns("/dist/**"), blobs_dir=blobs_dir, codec=CODEC, fsync=False)
    assert len(collected.outputs) == 2
    assert len(collected.blobs) == 1
    assert os.listdir(blobs_dir) == [digest_bytes(HASH, b"same").hex]


def test_relative_link_into_the_outputs_is_recorded_as_a_link(ws: Path, blobs_dir: Path) -> None:
    _write(ws, "/dist/lib.so.1", b"elf")
    os.symlink("lib.so.1", ws / "dist" / "lib.so")
    os.symlink("/etc/hostname", ws / "dist" / "abs")  # absolute: not a link of the entry
    outputs = [OutputFile(path=p, source=ws / p[1:]) for p in ("/dist/lib.so", "/dist/lib.so.1")]
    collected = collect_files(outputs, blobs_dir=blobs_dir, codec=CODEC, fsync=False)
    link, target = collected.outputs
    assert (link.path, link.symlink) == ("/dist/lib.so", "lib.so.1")
    assert (link.hash, link.size, link.mode) == (target.hash, target.size, target.mode)
    assert target.symlink is None
    assert list(collected.blobs) == [target.hash]


def test_link_outside_the_outputs_is_recorded_as_its_content(ws: Path, blobs_dir: Path) -> None:
    _write(ws, "/src/real", b"content")
    (ws / "dist").mkdir()
    os.symlink("../src/real", ws / "dist" / "copy")
    collected = collect(ws, patterns("/dist/**"), blobs_dir=blobs_dir, codec=CODEC, fsync=False)
    (record,) = collected.outputs
    assert record.symlink is None
    assert record.hash == digest_bytes(HASH, b"content")


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/.git/config", "inside a .git directory"),
        ("/.haz/x", "inside the workspace's .haz directory"),
        ("/a/../b", ""),
    ],
)
def test_outputs_problem_refuses_reserved_and_malformed_paths(
    tmp_path: Path, path: str, reason: str
) -> None:
    problem = outputs_problem([OutputFile(path=path, source=tmp_path)])
    assert problem is not None
    assert reason in problem


def test_outputs_problem_refuses_a_path_listed_twice(tmp_path: Path) -> None:
    twice = [OutputFile(path="/a", source=tmp_path), OutputFile(path="/a", source=tmp_path)]
    assert outputs_problem(twice) == "output path '/a' is listed twice"


def test_collect_of_nothing_is_empty(ws: Path, blobs_dir: Path) -> None:
    collected = collect(ws, patterns("/dist/**"), blobs_dir=blobs_dir, codec=CODEC, fsync=False)
    assert collected.outputs == ()
    assert dict(collected.blobs) == {}
