"""Key framing (CACHE-001..009): known answers, the bytes of each component, injectivity.

Chapter revision 1 (CACHE-007: each hard predecessor frames an outputs digest) changed every
key: the known answers are the SPEC's revision-1 vectors and the pinned vectors were re-pinned
at revision 1; the revision-0 answers are kept to prove they are no longer produced.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hazremote.domain.digest import HASH_IDS, Digest, digest_bytes, new_hasher
from hazremote.domain.model import CommandAction, HashName, ShellAction
from hazremote.domain.refs import TaskId
from hazremote.keys.components import (
    EnvEntry,
    EnvSource,
    InputFile,
    KeyComponents,
    PredecessorStreams,
)
from hazremote.keys.framing import CHAPTER_REVISION, frame_bytes, frame_key, outputs_digest


def _d(h: HashName, data: bytes) -> Digest:
    return digest_bytes(h, data)


def _v1(h: HashName) -> KeyComponents:
    return KeyComponents(action=CommandAction(argv=("echo", "hi")))


def _v2(h: HashName) -> KeyComponents:
    return KeyComponents(
        action=ShellAction(shell="sh", script="cc -c src/a.c -o out/a.o"),
        inputs=(
            InputFile(path="/lib/src/a.c", executable=False, digest=_d(h, b"int a;\n"), size=7),
            InputFile(path="/lib/src/b.h", executable=False, digest=_d(h, b"int b;\n"), size=7),
        ),
        predecessors=(
            PredecessorStreams(
                task=TaskId("gen", "gen"),
                stdout=_d(h, b"generated\n"),
                stderr=_d(h, b""),
                outputs=outputs_digest(
                    [
                        ("/lib/gen/run.sh", True, _d(h, b"#!/bin/sh\n")),
                        ("/lib/gen/a.h", False, _d(h, b"#define A 1\n")),
                    ],
                    h,
                ),
            ),
        ),
        env=(
            EnvEntry(name="CC", source=EnvSource.UNSET, value=None),
            EnvEntry(name="MODE", source=EnvSource.OVERRIDE, value="release"),
            EnvEntry(name="PATH", source=EnvSource.SET, value="/usr/bin:/bin"),
        ),
        cwd="lib",
        outputs=("/lib/out/a.o",),
    )


def _exec_unicode(h: HashName) -> KeyComponents:
    return KeyComponents(
        action=CommandAction(argv=("python3", "gen.py", "--name=café")),
        inputs=(
            InputFile(
                path="/tools/gen.py",
                executable=True,
                digest=_d(h, b"#!/usr/bin/env py\n"),
                size=18,
            ),
            InputFile(
                path="/tools/données/été.txt",
                executable=False,
                digest=_d(h, "été\n".encode()),
                size=6,
            ),
        ),
        cwd="tools",
        outputs=("/tools/out/**",),
    )


def _bash_empty_value(h: HashName) -> KeyComponents:
    return KeyComponents(
        action=ShellAction(shell="bash", script="set -o pipefail; make | tee log"),
        env=(
            EnvEntry(name="EMPTY", source=EnvSource.SET, value=""),
            EnvEntry(name="UNSET_ONE", source=EnvSource.UNSET, value=None),
        ),
    )


def _empty_argv_root_outputs(h: HashName) -> KeyComponents:
    return KeyComponents(action=CommandAction(argv=()), outputs=("/a", "/b/**/*.o"))


def _two_predecessors(h: HashName) -> KeyComponents:
    return KeyComponents(
        action=CommandAction(argv=("cat",)),
        predecessors=(
            PredecessorStreams(
                task=TaskId("a", "build"),
                stdout=_d(h, b""),
                stderr=_d(h, b"w\n"),
                outputs=outputs_digest([], h),
            ),
            PredecessorStreams(
                task=TaskId("b", "gen"),
                stdout=_d(h, b"x"),
                stderr=_d(h, b""),
                outputs=outputs_digest([("/b/out/x", False, _d(h, b"x"))], h),
            ),
        ),
        cwd="packages/web",
    )


KNOWN_ANSWERS = [
    # SPEC §3 reference vectors, chapter revision 1 (MUST reproduce)
    ("v1", _v1, HashName.BLAKE3,
     "fc2d31459585dbf613d2d537c9e7d698b77db9b3cf60cb7ae803652989b4239e"),
    ("v1", _v1, HashName.SHA256,
     "431255b264434d1828c793242ba7c21f55235b3571b1d64c80280bb16c76eab6"),
    ("v2", _v2, HashName.BLAKE3,
     "8be2d0e7be1b522931e4fcc718c8c1cc0ecb1f5c4fe607924342dcbf5d8b9a2a"),
    ("v2", _v2, HashName.SHA256,
     "f8decc32b5341438b70a580b9f2e291d7f9a0c950d885945244c1fad8de365af"),
]  # fmt: skip

# The same vectors at chapter revision 0 (no outputs digest): no longer produced.
REVISION_0_ANSWERS = {
    ("v1", HashName.BLAKE3): "62fcaf741b54b6af68158aa95b8a50f062fb0d1d48578c45294cab95cee49894",
    ("v1", HashName.SHA256): "34c57a7bedab2cc83d58577bd1069d913d471e30b46b0765ec6b86ce7d21a6fb",
    ("v2", HashName.BLAKE3): "ca7bd80356da8c5d8ca50f73879a41909fc4b247a3255bbd19bdbb18f075029a",
    ("v2", HashName.SHA256): "3ce95911add66ac526c747cd777679d4d7891ae8c4da41df0fa6a96b26bb7a14",
}


@pytest.mark.parametrize(
    ("name", "make", "hash_name", "expected"),
    KNOWN_ANSWERS,
    ids=[f"{n}-{h.value}" for n, _, h, _ in KNOWN_ANSWERS],
)
def test_known_answer_vectors(name: str, make: object, hash_name: HashName, expected: str) -> None:
    """CACHE-003..009: the SPEC reference vectors and pinned vectors hash to their answers."""
    assert callable(make)
    assert frame_key(make(hash_name), hash_name).hex == expected


@pytest.mark.parametrize(
    ("name", "make", "hash_name", "expected"),
    KNOWN_ANSWERS,
    ids=[f"{n}-{h.value}" for n, _, h, _ in KNOWN_ANSWERS],
)
def test_revision_0_answers_are_no_longer_produced(
    name: str, make: object, hash_name: HashName, expected: str
) -> None:
    """CACHE-003/007: chapter revision 1 changes every key; the revision-0 answers are gone, and
    a revision-0 frame (header byte 0, no outputs digest) still reproduces them — so the test
    would notice a revision bump without the framing change, or the reverse."""
    assert callable(make)
    components = make(hash_name)
    old = REVISION_0_ANSWERS[(name, hash_name)]
    assert CHAPTER_REVISION == 1
    assert frame_key(components, hash_name).hex == expected != old
    hasher = new_hasher(hash_name)
    hasher.update(_reference_frame(components, hash_name, revision=0))
    assert hasher.digest().hex() == old


def test_outputs_digest_frames_files_like_inputs_sorted_by_path() -> None:
    """CACHE-007: the outputs digest hashes ``u32`` count then, sorted by path, ``str`` path,
    ``u8`` executable, ``d32`` digest — exactly the CACHE-006 input framing, no header."""
    files = [("/lib/gen/run.sh", True, D1), ("/lib/gen/a.h", False, D2)]
    framed = _u32(2) + _s("/lib/gen/a.h") + b"\x00" + D2.raw + _s("/lib/gen/run.sh") + b"\x01"
    framed += D1.raw
    for h in HashName:
        assert outputs_digest(files, h) == digest_bytes(h, framed)
        assert outputs_digest(reversed(files), h) == outputs_digest(files, h)
    assert outputs_digest([], H) == digest_bytes(H, _u32(0))


def test_outputs_digest_sorts_by_utf8_bytes_and_sees_every_field() -> None:
    """CACHE-004 sorting is by UTF-8 bytes; path, executable bit and content each count."""
    files = [("/z", False, D1), ("/é", False, D2), ("/a/b", False, D1)]
    framed = _u32(3) + b"".join(
        _s(p) + b"\x00" + d.raw for p, _, d in sorted(files, key=lambda f: f[0].encode())
    )
    assert outputs_digest(files, H) == digest_bytes(H, framed)
    base = outputs_digest([("/a", False, D1)], H)
    assert outputs_digest([("/b", False, D1)], H) != base
    assert outputs_digest([("/a", True, D1)], H) != base
    assert outputs_digest([("/a", False, D2)], H) != base
    assert outputs_digest([], H) != base


# --- an independent, deliberately naive encoder of the SPEC framing --------------------------


def _u32(n: int) -> bytes:
    return struct.pack("<I", n)


def _s(text: str) -> bytes:
    data = text.encode()
    return _u32(len(data)) + data


def _reference_frame(c: KeyComponents, h: HashName, *, revision: int = 1) -> bytes:
    out = bytes([revision, HASH_IDS[h]])
    if isinstance(c.action, CommandAction):
        out += b"\x01" + _u32(len(c.action.argv)) + b"".join(_s(a) for a in c.action.argv)
    else:
        out += b"\x02" + _s(c.action.shell) + _s(c.action.script)
    out += _u32(len(c.inputs))
    for f in c.inputs:
        out += _s(f.path) + (b"\x01" if f.executable else b"\x00") + f.digest.raw
    out += _u32(len(c.predecessors))
    for p in c.predecessors:
        out += _s(p.task.project) + _s(p.task.task) + p.stdout.raw + p.stderr.raw
        if revision >= 1:
            out += p.outputs.raw
    out += _u32(len(c.env))
    for e in c.env:
        out += _s(e.name) + (b"\x00" if e.value is None else b"\x01" + _s(e.value))
    out += _s(c.cwd) + _u32(len(c.outputs)) + b"".join(_s(o) for o in c.outputs)
    return out


@pytest.mark.parametrize("hash_name", list(HashName))
@pytest.mark.parametrize(
    "make",
    [_v1, _v2, _exec_unicode, _bash_empty_value, _empty_argv_root_outputs, _two_predecessors],
)
def test_frame_bytes_match_a_naive_reference_encoder(make: object, hash_name: HashName) -> None:
    """CACHE-004..009: the optimised framing equals a line-by-line transcription of the SPEC."""
    assert callable(make)
    components = make(hash_name)
    assert frame_bytes(components, hash_name) == _reference_frame(components, hash_name)


# pinned once from this implementation (cross-checked by the naive encoder above): an
# accidental framing change fails loudly
PINNED = [
    ("exec+unicode", _exec_unicode, HashName.BLAKE3,
     "3ff1fb757dc2c474602860861f9405b9b634b0b3420c7223e63a6f2da5acbfca"),
    ("exec+unicode", _exec_unicode, HashName.SHA256,
     "0013a97753799dc562c9cd434c9e6d834363286d211ac64f0ba74427993d5487"),
    ("bash+empty value", _bash_empty_value, HashName.BLAKE3,
     "f7ddfb29422d4fbc014552e9bfabcf1a52b86e6dce9d7f3f6885c367b6c23893"),
    ("bash+empty value", _bash_empty_value, HashName.SHA256,
     "a211fcfe92f7921553ca7abe08e5beb30ceb06ede00750923704f7a491f16ef3"),
    ("empty argv", _empty_argv_root_outputs, HashName.BLAKE3,
     "84511495f548b0de3a06e2cdc4bc98171f712902389c73262e3f7ba926d881d2"),
    ("empty argv", _empty_argv_root_outputs, HashName.SHA256,
     "331299e409427f982c2c5c29a07a7f03784c5f1f3c54cd13def8a356e2ff08b9"),
    ("two predecessors", _two_predecessors, HashName.BLAKE3,
     "f1b5d5d9be5bceb2e5cef579568333b58d816b0fe94fd99f36e40bdfc37fd0b9"),
    ("two predecessors", _two_predecessors, HashName.SHA256,
     "bcfd2d0918d1bb35c1c29f83131a445367c5fcfc740e2a380c13ba8ed5b6a344"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "make", "hash_name", "expected"),
    PINNED,
    ids=[f"{n}-{h.value}" for n, _, h, _ in PINNED],
)
def test_pinned_vectors(name: str, make: object, hash_name: HashName, expected: str) -> None:
    """CACHE-003: keys pinned at chapter revision 1 never change without a revision bump."""
    assert callable(make)
    assert CHAPTER_REVISION == 1
    assert frame_key(make(hash_name), hash_name).hex == expected


# --- the bytes of each component type ---------------------------------------------------------

H = HashName.BLAKE3
D1 = Digest(bytes(range(32)))
D2 = Digest(bytes(range(32, 64)))
EMPTY_TAIL = _u32(0) + _u32(0) + _u32(0) + _s("") + _u32(0)  # inputs, preds, env, cwd, outputs


def test_header_is_chapter_revision_then_hash_id() -> None:
    """CACHE-003: the first two bytes are the chapter revision and the hash function id."""
    c = KeyComponents(action=CommandAction(argv=()))
    assert frame_bytes(c, HashName.BLAKE3)[:2] == b"\x01\x00"
    assert frame_bytes(c, HashName.SHA256)[:2] == b"\x01\x01"


def test_command_action_is_tag_1_and_a_list_of_strings() -> None:
    """CACHE-005: ``u8 0x01`` then the argv as a list of ``str``."""
    c = KeyComponents(action=CommandAction(argv=("a", "bé")))
    expected = b"\x01\x00\x01" + _u32(2) + _u32(1) + b"a" + _u32(3) + "bé".encode() + EMPTY_TAIL
    assert frame_bytes(c, H) == expected


def test_shell_action_is_tag_2_shell_then_script() -> None:
    """CACHE-005: ``u8 0x02``, ``str`` shell name, ``str`` script."""
    c = KeyComponents(action=ShellAction(shell="sh", script="echo"))
    assert frame_bytes(c, H) == b"\x01\x00\x02" + _s("sh") + _s("echo") + EMPTY_TAIL


def test_inputs_are_path_executable_byte_and_raw_digest() -> None:
    """CACHE-006: each input is ``str`` path, ``u8`` executable, ``d32`` digest."""
    c = KeyComponents(
        action=CommandAction(argv=()),
        inputs=(
            InputFile(path="/a", executable=True, digest=D1, size=1),
            InputFile(path="/b", executable=False, digest=D2, size=2),
        ),
    )
    body = frame_bytes(c, H)[3 + 4 :]
    assert body.startswith(
        _u32(2) + _s("/a") + b"\x01" + D1.raw + _s("/b") + b"\x00" + D2.raw + _u32(0)
    )


@pytest.mark.parametrize("hash_name", list(HashName))
@pytest.mark.parametrize("sizes", [(0, 0), (1, 2), (2**40, 7)])
def test_input_size_is_never_framed(hash_name: HashName, sizes: tuple[int, int]) -> None:
    """CACHE-006: an input's ``size`` is carried for blob transfer, never part of the key:
    the framed bytes and the key are those of the same inputs with any other sizes."""

    def components(size_a: int, size_b: int) -> KeyComponents:
        return KeyComponents(
            action=CommandAction(argv=("cc",)),
            inputs=(
                InputFile(path="/a", executable=True, digest=D1, size=size_a),
                InputFile(path="/b", executable=False, digest=D2, size=size_b),
            ),
        )

    reference = components(123, 456)
    varied = components(*sizes)
    assert frame_bytes(varied, hash_name) == frame_bytes(reference, hash_name)
    assert frame_key(varied, hash_name) == frame_key(reference, hash_name)
    assert frame_bytes(varied, hash_name) == _reference_frame(varied, hash_name)


def test_predecessors_are_project_task_stdout_stderr_outputs() -> None:
    """CACHE-007 (revision 1): ``str`` project, ``str`` task, ``d32`` stdout, ``d32`` stderr,
    ``d32`` outputs digest."""
    d3 = Digest(bytes(range(64, 96)))
    c = KeyComponents(
        action=CommandAction(argv=()),
        predecessors=(
            PredecessorStreams(task=TaskId("gen", "run"), stdout=D1, stderr=D2, outputs=d3),
        ),
    )
    body = frame_bytes(c, H)[3 + 4 + 4 :]
    assert body.startswith(_u32(1) + _s("gen") + _s("run") + D1.raw + D2.raw + d3.raw + _u32(0))


def test_env_unset_is_marker_0_and_set_or_override_is_marker_1_plus_value() -> None:
    """CACHE-008: unset → ``u8 0x00``; set or override → ``u8 0x01`` + ``str`` value."""
    c = KeyComponents(
        action=CommandAction(argv=()),
        env=(
            EnvEntry(name="A", source=EnvSource.UNSET, value=None),
            EnvEntry(name="B", source=EnvSource.SET, value="1"),
            EnvEntry(name="C", source=EnvSource.OVERRIDE, value=""),
        ),
    )
    body = frame_bytes(c, H)[3 + 4 + 4 + 4 :]
    assert body == (
        _u32(3)
        + _s("A")
        + b"\x00"
        + _s("B")
        + b"\x01"
        + _s("1")
        + _s("C")
        + b"\x01"
        + _s("")
        + _s("")
        + _u32(0)
    )


def test_cwd_then_outputs_close_the_frame() -> None:
    """CACHE-009: ``str`` cwd then the list of ``str`` output patterns, as given."""
    c = KeyComponents(action=CommandAction(argv=()), cwd="lib", outputs=("/lib/a", "/lib/b/**"))
    assert frame_bytes(c, H).endswith(_s("lib") + _u32(2) + _s("/lib/a") + _s("/lib/b/**"))


def test_task_name_is_not_in_the_key() -> None:
    """CACHE-004: identical work in two tasks shares a key (the framing has no task name)."""
    assert frame_key(_v2(H), H) == frame_key(_v2(H), H)
    assert b"build" not in frame_bytes(_v2(H), H)


# --- injectivity -------------------------------------------------------------------------------


def _decode(data: bytes) -> tuple[object, ...]:
    """Parse framed bytes back into plain tuples (test-only inverse of the framing)."""
    pos = 0

    def take(n: int) -> bytes:
        nonlocal pos
        chunk = data[pos : pos + n]
        assert len(chunk) == n
        pos += n
        return chunk

    def u32() -> int:
        value: int = struct.unpack("<I", take(4))[0]
        return value

    def s() -> str:
        return take(u32()).decode()

    header = take(2)
    tag = take(1)
    action: tuple[object, ...]
    if tag == b"\x01":
        action = ("cmd", tuple(s() for _ in range(u32())))
    else:
        assert tag == b"\x02"
        action = ("sh", s(), s())
    inputs = tuple((s(), take(1), take(32)) for _ in range(u32()))
    preds = tuple((s(), s(), take(32), take(32), take(32)) for _ in range(u32()))
    env = []
    for _ in range(u32()):
        name = s()
        env.append((name, s() if take(1) == b"\x01" else None))
    cwd = s()
    outputs = tuple(s() for _ in range(u32()))
    assert pos == len(data), "trailing bytes"
    return (header, action, inputs, preds, tuple(env), cwd, outputs)


def _plain(c: KeyComponents) -> tuple[object, ...]:
    """What framing preserves: env SET and OVERRIDE frame identically (both 0x01 + value)."""
    action: tuple[object, ...] = (
        ("cmd", c.action.argv)
        if isinstance(c.action, CommandAction)
        else ("sh", c.action.shell, c.action.script)
    )
    return (
        action,
        tuple((f.path, b"\x01" if f.executable else b"\x00", f.digest.raw) for f in c.inputs),
        tuple(
            (p.task.project, p.task.task, p.stdout.raw, p.stderr.raw, p.outputs.raw)
            for p in c.predecessors
        ),
        tuple((e.name, e.value) for e in c.env),
        c.cwd,
        c.outputs,
    )


_text = st.text(max_size=6)
_digest = st.sampled_from([D1, D2, Digest(bytes(32))])
_action = st.one_of(
    st.builds(CommandAction, argv=st.lists(_text, max_size=3).map(tuple)),
    st.builds(ShellAction, shell=_text, script=_text),
)
_input = st.builds(InputFile, path=_text, executable=st.booleans(), digest=_digest)
_pred = st.builds(
    PredecessorStreams,
    task=st.builds(TaskId, _text, _text),
    stdout=_digest,
    stderr=_digest,
    outputs=_digest,
)
_env = st.one_of(
    st.builds(EnvEntry, name=_text, source=st.just(EnvSource.UNSET), value=st.none()),
    st.builds(
        EnvEntry,
        name=_text,
        source=st.sampled_from([EnvSource.SET, EnvSource.OVERRIDE]),
        value=_text,
    ),
)
_components = st.builds(
    KeyComponents,
    action=_action,
    inputs=st.lists(_input, max_size=3).map(tuple),
    predecessors=st.lists(_pred, max_size=2).map(tuple),
    env=st.lists(_env, max_size=3).map(tuple),
    cwd=_text,
    outputs=st.lists(_text, max_size=3).map(tuple),
)


@settings(max_examples=100)
@given(_components, st.sampled_from(list(HashName)))
def test_framing_decodes_back_to_its_components(c: KeyComponents, h: HashName) -> None:
    """CACHE-004..009: framing is injective — the frame parses back to exactly its components,
    so different components (modulo env SET vs OVERRIDE, which the SPEC frames alike) give
    different bytes."""
    decoded = _decode(frame_bytes(c, h))
    assert decoded[0] == bytes([CHAPTER_REVISION, HASH_IDS[h]])
    assert decoded[1:] == _plain(c)


@settings(max_examples=100)
@given(_components, _components)
def test_different_components_give_different_keys(a: KeyComponents, b: KeyComponents) -> None:
    """CACHE-001: two components that differ in anything the key covers have different keys."""
    if _plain(a) == _plain(b):
        assert frame_key(a, H) == frame_key(b, H)
    else:
        assert frame_key(a, H) != frame_key(b, H)
