"""Manifest parsing and serialisation (CACHE-011, CACHE-015, SEC-001)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hazremote.cache import (
    Compression,
    Manifest,
    ManifestError,
    ManifestSchemaError,
    OutputRecord,
    RecordedKeyComponents,
    StreamRecord,
    parse_manifest,
)
from hazremote.domain.digest import Digest
from hazremote.domain.model import CommandAction, HashName, ShellAction
from hazremote.domain.refs import TaskId
from hazremote.keys.components import (
    EnvEntry,
    EnvSource,
    InputFile,
    KeyComponents,
    PredecessorStreams,
)
from hazremote.keys.framing import outputs_digest
from tests.cache.cachekit import HASH, REVISION, make_key

D1 = make_key("one")
D2 = make_key("two")
D3 = make_key("three")


def sample_manifest() -> Manifest:
    components = KeyComponents(
        action=ShellAction(shell="sh", script="cc -c src/a.c -o out/a.o"),
        inputs=(InputFile(path="/lib/src/a.c", executable=False, digest=D1, size=10),),
        predecessors=(
            PredecessorStreams(task=TaskId("gen", "gen"), stdout=D1, stderr=D2, outputs=D3),
        ),
        env=(
            EnvEntry(name="CC", source=EnvSource.UNSET, value=None),
            EnvEntry(name="MODE", source=EnvSource.OVERRIDE, value="release"),
            EnvEntry(name="PATH", source=EnvSource.SET, value="/usr/bin:/bin"),
        ),
        cwd="lib",
        outputs=("/lib/out/a.o",),
    )
    return Manifest(
        chapter_revision=REVISION,
        hash_function=HASH,
        key=make_key("key"),
        created_at_unix=1_700_000_000,
        duration_ms=812,
        producer="ci-main",
        stdout=StreamRecord(hash=D1, size=10, compression=Compression.NONE),
        stderr=StreamRecord(hash=D2, size=0, compression=Compression.NONE),
        outputs=(
            OutputRecord(
                path="/lib/out/a.o", hash=D2, size=9000, mode=0o755, compression=Compression.ZSTD
            ),
        ),
        key_components=RecordedKeyComponents.from_components(components),
    )


def parse(data: bytes) -> Manifest:
    return parse_manifest(data, chapter_revision=REVISION, hash_name=HASH)


def document() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(sample_manifest().to_json())
    return loaded


def encode(doc: object) -> bytes:
    return json.dumps(doc).encode()


def test_round_trip_is_equal_and_serialisation_is_deterministic() -> None:
    """CACHE-011: parse(to_json(m)) == m, and equal manifests give equal bytes."""
    manifest = sample_manifest()
    data = manifest.to_json()
    assert parse(data) == manifest
    assert parse(data).to_json() == data
    assert sample_manifest().to_json() == data


def test_document_has_exactly_the_spec_fields_and_no_env_values() -> None:
    """CACHE-011: field names as specified; key_components never carry env values."""
    doc = document()
    assert list(doc) == [
        "chapter_revision",
        "hash_function",
        "key",
        "created_at_unix",
        "exit_code",
        "duration_ms",
        "producer",
        "stdout",
        "stderr",
        "outputs",
        "key_components",
    ]
    assert doc["outputs"][0] == {
        "path": "/lib/out/a.o",
        "hash": D2.hex,
        "size": 9000,
        "mode": 493,
        "compression": "zstd",
    }
    assert doc["key_components"]["env"] == [["CC", "unset"], ["MODE", "override"], ["PATH", "set"]]
    assert doc["key_components"]["predecessors"] == [["gen:gen", D1.hex, D2.hex, D3.hex]]
    text = sample_manifest().to_json().decode()
    assert "release" not in text
    assert "/usr/bin:/bin" not in text


def _set(path: str, value: object) -> Any:
    def mutate(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = doc
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        if last.isdigit():
            target[int(last)] = value
        else:
            target[last] = value

    return mutate


def _delete(name: str) -> Any:
    def mutate(doc: dict[str, Any]) -> None:
        del doc[name]

    return mutate


CORRUPTIONS = [
    ("unknown top-level field", _set("extra", 1), "unknown field 'extra'"),
    ("unknown stream field", _set("stdout.extra", 1), "stdout: unknown field 'extra'"),
    ("unknown output field", _set("outputs.0.owner", "root"), "outputs[0]: unknown field"),
    ("missing field", _delete("producer"), "missing field 'producer'"),
    ("boolean is not an int", _set("duration_ms", True), "duration_ms: expected an integer"),
    ("float is not an int", _set("created_at_unix", 1.5), "created_at_unix: expected an int"),
    ("negative size", _set("stdout.size", -1), "stdout.size: integer -1 out of range"),
    ("non-zero exit code", _set("exit_code", 1), "exit_code: integer 1 out of range"),
    ("uppercase hex", _set("key", D1.hex.upper()), "key: expected 64 lowercase hex"),
    ("short hex", _set("stdout.hash", "abcd"), "stdout.hash: expected 64 lowercase hex"),
    ("unknown compression", _set("stderr.compression", "gzip"), "stderr.compression"),
    ("relative path", _set("outputs.0.path", "lib/a.o"), "not workspace-absolute"),
    ("dot-dot segment", _set("outputs.0.path", "/lib/../../etc/x"), "'..' segment"),
    ("dot segment", _set("outputs.0.path", "/lib/./a.o"), "'.' segment"),
    ("empty segment", _set("outputs.0.path", "/lib//a.o"), "empty segment"),
    ("trailing slash", _set("outputs.0.path", "/lib/"), "empty segment"),
    ("NUL in path", _set("outputs.0.path", "/lib/a\x00.o"), "NUL"),
    ("lone surrogate", _set("outputs.0.path", "/lib/\udcff"), "not valid UTF-8"),
    ("mode too large", _set("outputs.0.mode", 0o10000), "outputs[0].mode: integer 4096"),
    ("negative mode", _set("outputs.0.mode", -1), "outputs[0].mode"),
    ("outputs not a list", _set("outputs", {}), "outputs: expected a list"),
    ("stream not an object", _set("stdout", []), "stdout: expected an object"),
    ("producer not a string", _set("producer", 7), "producer: expected a string"),
    ("empty argv", _set("key_components.action", {"command": []}), "at least one item"),
    (
        "action with both forms",
        _set("key_components.action", {"command": ["x"], "shell": "sh"}),
        "unknown field 'shell'",
    ),
    ("bad env source", _set("key_components.env.0.1", "secret"), "key_components.env[0][1]"),
    ("env pair too long", _set("key_components.env.0", ["A", "set", "v"]), "list of 2 items"),
    ("bad predecessor id", _set("key_components.predecessors.0.0", "gen"), "task id"),
    (
        "predecessor without outputs hash",
        _set("key_components.predecessors.0", ["gen:gen", D1.hex, D2.hex]),
        "key_components.predecessors[0]: expected a list of 4 items, got 3",
    ),
    (
        "bad predecessor outputs hash",
        _set("key_components.predecessors.0.3", D3.hex.upper()),
        "key_components.predecessors[0][3]: expected 64 lowercase hex",
    ),
    ("bad input path", _set("key_components.inputs.0.0", "/a/../b"), "'..' segment"),
    # Recorded inputs have a fast path for plain items; these must all fall out of it.
    ("input dot segment", _set("key_components.inputs.0.0", "/a/./b"), "inputs[0][0]"),
    ("input empty segment", _set("key_components.inputs.0.0", "/a//b"), "empty segment"),
    ("input trailing slash", _set("key_components.inputs.0.0", "/a/"), "empty segment"),
    ("input relative", _set("key_components.inputs.0.0", "a/b"), "not workspace-absolute"),
    ("input NUL", _set("key_components.inputs.0.0", "/a\x00b"), "NUL"),
    ("input uppercase hex", _set("key_components.inputs.0.1", D1.hex.upper()), "inputs[0][1]"),
    (
        "input hex with spaces",
        _set("key_components.inputs.0.1", D1.hex[:62] + " 0"),
        "inputs[0][1]: expected 64 lowercase hex",
    ),
    ("input hash not a string", _set("key_components.inputs.0.1", 7), "inputs[0][1]"),
    ("input pair too long", _set("key_components.inputs.0", ["/a", D1.hex, 1]), "2 items"),
    ("input not a list", _set("key_components.inputs.0", "/a"), "inputs[0]: expected a list"),
    ("bad output pattern", _set("key_components.outputs.0", "/a/[b"), "unclosed"),
    ("relative output pattern", _set("key_components.outputs.0", "out/*"), "not workspace"),
]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [pytest.param(m, msg, id=name) for name, m, msg in CORRUPTIONS],
)
def test_invalid_documents_raise_a_precise_manifest_error(mutate: Any, message: str) -> None:
    """CACHE-011: unknown fields rejected, every type checked; the message names the field."""
    doc = document()
    mutate(doc)
    with pytest.raises(ManifestError) as caught:
        parse(json.dumps(doc, ensure_ascii=True).encode())
    assert not isinstance(caught.value, ManifestSchemaError)
    assert message in str(caught.value)


def test_recorded_inputs_outside_the_fast_path_parse_the_same() -> None:
    """Dot files and non-ASCII paths are valid inputs; they take the checked slow path."""
    doc = document()
    doc["key_components"]["inputs"] = [["/.eslintrc", D1.hex], ["/src/é.ts", D2.hex]]
    manifest = parse(json.dumps(doc, ensure_ascii=False).encode())
    assert [(i.path, i.hash) for i in manifest.key_components.inputs] == [
        ("/.eslintrc", D1),
        ("/src/é.ts", D2),
    ]


def test_duplicate_output_paths_are_rejected() -> None:
    """CACHE-011: two records for one path would make a restore ambiguous."""
    doc = document()
    doc["outputs"].append(dict(doc["outputs"][0]))
    with pytest.raises(ManifestError, match="duplicate output path"):
        parse(encode(doc))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{not json", "invalid JSON"),
        (b"", "invalid JSON"),
        (b"[1, 2]", "expected an object, got a list"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b'{"producer": "a", "producer": "b"}', "duplicate key 'producer'"),
        (b'{"duration_ms": NaN}', "NaN is not a JSON number"),
        (b"[" * 100_000, "invalid JSON"),
        # Issue 13: json raises a plain ValueError for an integer CPython will not convert.
        (b'{"duration_ms": ' + b"9" * 5000 + b"}", "integer of more than 4300 digits"),
    ],
)
def test_unparseable_bytes_raise_manifest_error(data: bytes, message: str) -> None:
    """CACHE-015: garbage is a ManifestError (a miss for the caller), never another exception."""
    with pytest.raises(ManifestError, match=message):
        parse(data)


def test_other_revision_is_a_schema_mismatch_even_with_unknown_fields() -> None:
    """CACHE-015: a manifest of another chapter revision is miss-schema-mismatch, not corrupt."""
    doc = document()
    doc["chapter_revision"] = REVISION + 1
    doc["field_of_the_future"] = {}
    with pytest.raises(ManifestSchemaError, match=f"chapter_revision {REVISION + 1}"):
        parse(encode(doc))


def _revision_0_document() -> dict[str, Any]:
    """The sample as chapter revision 0 wrote it: predecessors without an outputs hash."""
    doc = document()
    doc["chapter_revision"] = 0
    doc["key_components"]["predecessors"] = [["gen:gen", D1.hex, D2.hex]]
    return doc


def test_revision_0_document_is_a_schema_mismatch_not_corrupt() -> None:
    """CACHE-003/007/015: an entry written before chapter revision 1 is a schema mismatch (a
    miss), never a hit and never "corrupt"."""
    assert REVISION == 1
    with pytest.raises(ManifestSchemaError, match="chapter_revision 0, this client uses 1"):
        parse(encode(_revision_0_document()))


def test_revision_0_document_parses_as_revision_0_and_round_trips() -> None:
    """CACHE-011: asked for revision 0 (as the cache service does for the entries it keeps for
    older clients), a revision-0 document parses with ``outputs`` None and serialises back to
    three-item predecessors; a four-item one is not a revision-0 document."""
    data = encode(_revision_0_document())
    manifest = parse_manifest(data, chapter_revision=0, hash_name=HASH)
    (pred,) = manifest.key_components.predecessors
    assert (pred.task, pred.stdout, pred.stderr, pred.outputs) == ("gen:gen", D1, D2, None)
    assert json.loads(manifest.to_json())["key_components"]["predecessors"] == [
        ["gen:gen", D1.hex, D2.hex]
    ]
    four = document()
    four["chapter_revision"] = 0
    with pytest.raises(ManifestError, match="list of 3 items, got 4"):
        parse_manifest(encode(four), chapter_revision=0, hash_name=HASH)


def test_outputs_digest_is_the_framed_output_records() -> None:
    """CACHE-007: a manifest's outputs digest frames its output records (path, any ``x`` bit of
    the mode, hash) like input files — what a hit gives its dependants' keys."""
    manifest = sample_manifest()
    assert manifest.outputs_digest() == outputs_digest([("/lib/out/a.o", True, D2)], HASH)
    not_exec = dataclasses.replace(
        manifest, outputs=(dataclasses.replace(manifest.outputs[0], mode=0o644),)
    )
    assert not_exec.outputs_digest() == outputs_digest([("/lib/out/a.o", False, D2)], HASH)
    group_exec = dataclasses.replace(
        manifest, outputs=(dataclasses.replace(manifest.outputs[0], mode=0o610),)
    )
    assert group_exec.outputs_digest() == manifest.outputs_digest()
    assert dataclasses.replace(manifest, outputs=()).outputs_digest() == outputs_digest([], HASH)


def test_other_hash_function_is_a_schema_mismatch() -> None:
    """CACHE-015: a sha256 manifest in a blake3 workspace is miss-schema-mismatch."""
    doc = document()
    doc["hash_function"] = "sha256"
    with pytest.raises(ManifestSchemaError, match="hash_function 'sha256'"):
        parse(encode(doc))
    assert parse_manifest(encode(doc), chapter_revision=REVISION, hash_name=HashName.SHA256)


_chars = st.characters(codec="utf-8")  # no lone surrogates: they are not UTF-8
_text = st.text(alphabet=_chars)
_segment = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="/\x00"),
    min_size=1,
).filter(lambda s: s not in (".", ".."))
_paths = st.lists(_segment, min_size=1, max_size=4).map(lambda parts: "/" + "/".join(parts))
_digests = st.binary(min_size=32, max_size=32).map(Digest)
_compressions = st.sampled_from(Compression)


@settings(max_examples=60)
@given(
    outputs=st.lists(
        st.tuples(
            _paths,
            _digests,
            st.integers(0, 2**40),
            st.integers(0, 0o7777),
            _compressions,
        ),
        max_size=5,
        unique_by=lambda t: t[0],
    ),
    argv=st.lists(_text, min_size=1, max_size=3),
    producer=_text,
    stdout=st.tuples(_digests, st.integers(0, 2**40), _compressions),
)
def test_round_trip_of_generated_manifests(
    outputs: list[tuple[str, Digest, int, int, Compression]],
    argv: list[str],
    producer: str,
    stdout: tuple[Digest, int, Compression],
) -> None:
    """CACHE-011: every valid manifest survives serialisation unchanged."""
    manifest = Manifest(
        chapter_revision=REVISION,
        hash_function=HASH,
        key=D1,
        created_at_unix=0,
        duration_ms=0,
        producer=producer,
        stdout=StreamRecord(hash=stdout[0], size=stdout[1], compression=stdout[2]),
        stderr=StreamRecord(hash=D2, size=0, compression=Compression.NONE),
        outputs=tuple(
            OutputRecord(path=p, hash=h, size=s, mode=m, compression=c) for p, h, s, m, c in outputs
        ),
        key_components=RecordedKeyComponents.from_components(
            KeyComponents(action=CommandAction(argv=tuple(argv)))
        ),
    )
    assert parse(manifest.to_json()) == manifest
