"""Symbolic links among outputs: stored and restored as links when they stay inside.

Spec coverage (issue 12, ``docs/decisions.md`` "Symlinked outputs"):
* CACHE-011 — an output record's optional ``symlink`` field (the link text as readlink gives
  it): parsed strictly, serialised only when set; its hash/size/mode are those of the file it
  resolves to, an output of the same manifest.
* CACHE-017 — a relative link whose every hop is an output of the same run is stored as a
  link (no blob of its own); absolute links, links leaving the workspace or the outputs, and
  lexical/physical disagreements are stored as the copy they resolve to.
* CACHE-019..020/023 — a link entry restores as a link with the recorded text; an identical
  link already present is left alone; a file or another link in its place is replaced.
* SEC-001 — a link entry whose text is absolute, has a NUL, escapes the workspace, names a
  path outside the manifest's outputs or the declared outputs, or lies under a symlinked
  directory is refused: nothing is written, nothing outside the workspace is touched.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from hazremote.cache import (
    LookupStatus,
    Manifest,
    ManifestError,
    OutputFile,
    OutputRecord,
    RestoreStatus,
    StoreResult,
    parse_manifest,
)
from hazremote.domain.digest import digest_bytes
from tests.cache.cachekit import (
    HASH,
    REVISION,
    Env,
    components,
    make_key,
    plant_entry,
    restore,
    tree_snapshot,
)

LIB = b"\x7fELF pretend shared object\n" * 300


def store_paths(env: Env, key_label: str, paths: list[str]) -> StoreResult:
    """Store the workspace files (or links) at ``paths`` as they are on disk now."""
    key = make_key(key_label)
    return env.cache.store(
        key=key,
        components=components(),
        stdout=env.spool(f"{key.hex}.out", b"linked\n"),
        stderr=env.spool(f"{key.hex}.err", b""),
        outputs=[OutputFile(path=p, source=env.workspace / p[1:]) for p in paths],
        duration_ms=1,
        producer="test@host",
    )


def make_chain(env: Env) -> list[str]:
    """The issue's chain: libx.so -> libx.so.1 -> libx.so.1.7 (a regular file)."""
    env.write("/dist/lib/libx.so.1.7", LIB, 0o755)
    os.symlink("libx.so.1.7", env.workspace / "dist/lib/libx.so.1")
    os.symlink("libx.so.1", env.workspace / "dist/lib/libx.so")
    return ["/dist/lib/libx.so", "/dist/lib/libx.so.1", "/dist/lib/libx.so.1.7"]


def wipe(env: Env) -> None:
    for path in sorted((env.workspace / "dist").rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() and not path.is_symlink() else path.unlink()


def lookup(env: Env, label: str) -> Manifest:
    found = env.cache.lookup(make_key(label))
    assert found.status is LookupStatus.HIT, found.detail
    assert found.manifest is not None
    return found.manifest


# -- store ------------------------------------------------------------------------------------


def test_the_chain_is_stored_as_one_file_and_two_links(env: Env) -> None:
    """CACHE-017: one blob; the links carry their text and their target's hash, size, mode."""
    result = store_paths(env, "chain", make_chain(env))
    assert result.ok, result.warning
    by_path = {o.path: o for o in lookup(env, "chain").outputs}
    target = by_path["/dist/lib/libx.so.1.7"]
    assert target.symlink is None
    assert by_path["/dist/lib/libx.so.1"].symlink == "libx.so.1.7"
    assert by_path["/dist/lib/libx.so"].symlink == "libx.so.1"
    for link in ("/dist/lib/libx.so", "/dist/lib/libx.so.1"):
        assert (by_path[link].hash, by_path[link].size, by_path[link].mode) == (
            target.hash,
            len(LIB),
            0o755,
        )
    blobs = list((env.cache.entry_dir(make_key("chain")) / "outputs").iterdir())
    assert [b.name for b in blobs] == [target.hash.hex]


def test_a_relative_link_into_another_output_directory_is_a_link(env: Env) -> None:
    """CACHE-017: leading '..' segments are fine while the target is an output."""
    env.write("/dist/real/data.bin", b"data")
    (env.workspace / "dist/alias").mkdir()
    os.symlink("../real/data.bin", env.workspace / "dist/alias/data.bin")
    assert store_paths(env, "updown", ["/dist/alias/data.bin", "/dist/real/data.bin"]).ok
    by_path = {o.path: o for o in lookup(env, "updown").outputs}
    assert by_path["/dist/alias/data.bin"].symlink == "../real/data.bin"


@pytest.mark.parametrize(
    "kind", ["absolute-inside", "absolute-outside", "relative-escaping", "undeclared-target"]
)
def test_links_that_do_not_stay_among_the_outputs_are_stored_as_copies(env: Env, kind: str) -> None:
    """CACHE-017 (as before issue 12): the content the link resolves to, no symlink field."""
    outside = env.tmp / "outside.so"
    outside.write_bytes(b"outside bytes")
    env.write("/src/gen.h", b"#define X 1\n")
    env.write("/dist/real.so", b"inside bytes")
    text, expected = {
        "absolute-inside": (str(env.workspace / "dist/real.so"), b"inside bytes"),
        "absolute-outside": (str(outside), b"outside bytes"),
        "relative-escaping": (os.path.relpath(outside, env.workspace / "dist"), b"outside bytes"),
        "undeclared-target": ("../src/gen.h", b"#define X 1\n"),
    }[kind]
    os.symlink(text, env.workspace / "dist/link.so")
    assert store_paths(env, kind, ["/dist/link.so", "/dist/real.so"]).ok
    record = {o.path: o for o in lookup(env, kind).outputs}["/dist/link.so"]
    assert record.symlink is None
    assert record.hash == digest_bytes(HASH, expected)
    assert b'"symlink"' not in (env.cache.entry_dir(make_key(kind)) / "manifest.json").read_bytes()
    wipe(env)
    assert restore(env, lookup(env, kind)).ok
    link = env.workspace / "dist/link.so"
    assert not link.is_symlink()
    assert link.read_bytes() == expected


def test_a_link_whose_directory_is_a_symlink_is_stored_as_a_copy(env: Env) -> None:
    """CACHE-017: '..' through a symlinked directory resolves elsewhere than it reads; the
    link is stored as what it resolves to, never as a link that would restore differently."""
    env.write("/dist/other/x.bin", b"where the link really points")
    env.write("/dist/x.bin", b"what the text reads as")
    (env.workspace / "dist/other/deep").mkdir()
    os.symlink("../x.bin", env.workspace / "dist/other/deep/link")
    os.symlink("other/deep", env.workspace / "dist/hop")
    # Lexically /dist/hop/link -> /dist/x.bin; physically dist/other/deep/../x.bin.
    paths = ["/dist/hop/link", "/dist/x.bin", "/dist/other/x.bin"]
    assert store_paths(env, "physical", paths).ok
    record = {o.path: o for o in lookup(env, "physical").outputs}["/dist/hop/link"]
    assert record.symlink is None
    assert record.hash == digest_bytes(HASH, b"where the link really points")


def test_a_looping_link_handed_to_a_store_fails_it_cleanly(env: Env) -> None:
    """CACHE-017: a loop resolves to no file, so it is neither a link nor a copy (output
    collection never lists one); a store given one anyway leaves no entry."""
    os.makedirs(env.workspace / "dist")
    os.symlink("b", env.workspace / "dist/a")
    os.symlink("a", env.workspace / "dist/b")
    result = store_paths(env, "loop", ["/dist/a", "/dist/b"])
    assert not result.ok  # a dangling/looping link cannot be read: the store fails cleanly
    assert env.cache.lookup(make_key("loop")).status is LookupStatus.MISS_NO_ENTRY


# -- restore ----------------------------------------------------------------------------------


def test_the_chain_restores_as_links_with_identical_content(env: Env) -> None:
    """CACHE-019/023: os.readlink gives the recorded text; the bytes are the target's."""
    assert store_paths(env, "chain", make_chain(env)).ok
    wipe(env)
    result = restore(env, lookup(env, "chain"))
    assert result.ok, result.message
    assert result.written == 3
    lib = env.workspace / "dist/lib"
    assert os.readlink(lib / "libx.so") == "libx.so.1"
    assert os.readlink(lib / "libx.so.1") == "libx.so.1.7"
    assert not (lib / "libx.so.1.7").is_symlink()
    assert (lib / "libx.so").read_bytes() == LIB
    assert os.stat(lib / "libx.so").st_ino == os.stat(lib / "libx.so.1.7").st_ino


def test_identical_links_already_present_are_left_alone(env: Env) -> None:
    """CACHE-019/020: a replay over the run's own links touches nothing."""
    assert store_paths(env, "chain", make_chain(env)).ok
    before = tree_snapshot(env.workspace)
    result = restore(env, lookup(env, "chain"))
    assert result.ok, result.message
    assert (result.written, result.unchanged) == (0, 3)
    assert tree_snapshot(env.workspace) == before


def test_copies_or_other_links_in_place_of_a_link_are_replaced(env: Env) -> None:
    """CACHE-019: a regular file (an old copy) or a link with other text becomes the link;
    an outside file a wrong link pointed at is not touched."""
    assert store_paths(env, "chain", make_chain(env)).ok
    lib = env.workspace / "dist/lib"
    (lib / "libx.so").unlink()
    (lib / "libx.so").write_bytes(LIB)
    outside = env.tmp / "precious"
    outside.write_bytes(b"precious")
    (lib / "libx.so.1").unlink()
    os.symlink(outside, lib / "libx.so.1")
    result = restore(env, lookup(env, "chain"))
    assert result.ok, result.message
    assert (result.written, result.unchanged) == (2, 1)
    assert os.readlink(lib / "libx.so") == "libx.so.1"
    assert os.readlink(lib / "libx.so.1") == "libx.so.1.7"
    assert outside.read_bytes() == b"precious"


def test_a_link_is_restored_only_when_its_target_verifies(env: Env) -> None:
    """CACHE-019/RC-004: the target's blob is corrupt: no link (nor anything) is written."""
    assert store_paths(env, "chain", make_chain(env)).ok
    manifest = lookup(env, "chain")
    wipe(env)
    blob = env.cache.entry_dir(make_key("chain")) / "outputs" / manifest.outputs[2].hash.hex
    blob.chmod(0o644)
    blob.write_bytes(b"X" * blob.stat().st_size)
    result = restore(env, manifest)
    assert result.status is RestoreStatus.CORRUPT
    assert list((env.workspace / "dist").rglob("*")) == []


# -- manifest ---------------------------------------------------------------------------------


def link_document(env: Env, link: dict[str, object], *, label: str = "doc") -> bytes:
    """A planted entry's manifest bytes with one more (link) output record."""
    manifest = plant_entry(env.cache, make_key(label), [("/dist/a/real", b"real", 0o644)])
    record = manifest.outputs[0]
    extra = {
        "path": "/dist/a/link",
        "hash": record.hash.hex,
        "size": record.size,
        "mode": record.mode,
        "compression": "none",
        "symlink": "real",
    } | link
    document = manifest.to_json_object()
    document["outputs"] = [record.to_json(), extra]
    return json.dumps(document).encode()


def test_the_symlink_field_round_trips(env: Env) -> None:
    """CACHE-011: parsed into OutputRecord.symlink; serialised back byte for byte."""
    document = link_document(env, {})
    manifest = parse_manifest(document, chapter_revision=REVISION, hash_name=HASH)
    assert manifest.outputs[1].symlink == "real"
    again = parse_manifest(manifest.to_json(), chapter_revision=REVISION, hash_name=HASH)
    assert again == manifest
    assert b'"compression":"none","symlink":"real"}' in manifest.to_json()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"symlink": "/etc/passwd"}, "absolute"),
        ({"symlink": "../../../etc/passwd"}, "leaves the workspace"),
        ({"symlink": "re\u0000al"}, "NUL"),
        ({"symlink": ""}, "empty"),
        ({"symlink": "./real"}, "segment"),
        ({"symlink": "x/../real"}, "segment"),
        ({"symlink": "real/"}, "segment"),
        ({"symlink": 7}, "expected a string"),
        ({"symlink": "missing"}, "not an output of this manifest"),
        ({"symlink": "../../src/main.c"}, "not an output of this manifest"),
        ({"symlink": "link"}, "loop"),
        ({"size": 5}, "differ from"),
        ({"mode": 0o755}, "differ from"),
    ],
)
def test_malformed_or_hostile_symlink_fields_are_refused(
    env: Env, change: dict[str, object], message: str
) -> None:
    """CACHE-011/SEC-001: the parser refuses what a restore could not reproduce safely."""
    document = link_document(env, change)
    with pytest.raises(ManifestError, match=r"outputs\[1\]") as caught:
        parse_manifest(document, chapter_revision=REVISION, hash_name=HASH)
    assert message in str(caught.value)


def test_a_hostile_link_on_disk_is_a_corrupt_miss(env: Env) -> None:
    """CACHE-014..016: lookup of an entry with an absolute link is miss-corrupt."""
    document = link_document(env, {"symlink": "/etc/passwd"}, label="hostile")
    (env.cache.entry_dir(make_key("hostile")) / "manifest.json").write_bytes(document)
    assert env.cache.lookup(make_key("hostile")).status is LookupStatus.MISS_CORRUPT


# -- hostile manifests built in memory (a restore re-checks everything) ------------------------


@pytest.fixture
def outside(env: Env) -> Path:
    path = env.tmp / "outside"
    path.mkdir()
    (path / "keep.txt").write_bytes(b"untouched")
    return path


def hostile(env: Env, label: str, *links: tuple[str, str]) -> Manifest:
    """A planted entry with ``/dist/real`` plus link records (path, text) to its bytes."""
    manifest = plant_entry(env.cache, make_key(label), [("/dist/real", b"real", 0o644)])
    target = manifest.outputs[0]
    records: list[OutputRecord] = [target]
    records.extend(dataclasses.replace(target, path=path, symlink=text) for path, text in links)
    return dataclasses.replace(manifest, outputs=tuple(records))


@pytest.mark.parametrize(
    "links",
    [
        (("/dist/abs", "/etc/passwd"),),
        (("/dist/abs", "OUTSIDE"),),
        (("/dist/x/escape", "../../../etc/passwd"),),
        (("/dist/nul", "real\u0000"),),
        (("/dist/loop1", "loop2"), ("/dist/loop2", "loop1")),
        (("/dist/dangling", "nothing-here"),),
    ],
    ids=["absolute", "absolute-outside", "dot-dot-escape", "nul", "loop", "not-an-output"],
)
def test_hostile_link_entries_are_refused_and_write_nothing(
    env: Env, outside: Path, links: tuple[tuple[str, str], ...]
) -> None:
    """SEC-001: refused before anything is written; the entry is dropped."""
    links = tuple((p, str(outside / "keep.txt") if t == "OUTSIDE" else t) for p, t in links)
    manifest = hostile(env, "hostile", *links)
    result = restore(env, manifest)
    assert result.status is RestoreStatus.UNSAFE, result.message
    assert result.entry_removed
    assert not (env.workspace / "dist").exists()
    assert (outside / "keep.txt").read_bytes() == b"untouched"
    assert list(outside.iterdir()) == [outside / "keep.txt"]


def test_a_link_to_a_path_outside_the_declared_outputs_is_refused(env: Env) -> None:
    """SEC-001: the target is in the manifest but not declared: a miss, nothing written."""
    env.write("/src/main.c", b"int main;\n")
    manifest = plant_entry(env.cache, make_key("undeclared"), [("/src/main.c", b"evil", 0o644)])
    target = manifest.outputs[0]
    link = dataclasses.replace(target, path="/dist/main.c", symlink="../src/main.c")
    manifest = dataclasses.replace(manifest, outputs=(link, target))
    before = tree_snapshot(env.workspace)
    result = restore(env, manifest)
    assert result.status is RestoreStatus.UNSAFE
    assert tree_snapshot(env.workspace) == before


def test_a_link_under_a_symlinked_directory_is_never_written_through(
    env: Env, outside: Path
) -> None:
    """SEC-001: the link's parent is a symlink to the outside: refused, the outside intact."""
    manifest = hostile(env, "parent", ("/dist/linked/lib.so", "../real"))
    (env.workspace / "dist").mkdir()
    os.symlink(outside, env.workspace / "dist/linked")
    result = restore(env, manifest)
    assert result.status is RestoreStatus.UNSAFE
    assert list(outside.iterdir()) == [outside / "keep.txt"]
    assert not (env.workspace / "dist/real").exists()
