"""The pure half of key derivation: resolved components → framed bytes → cache key.

Spec coverage:
* CACHE-001 — the key is the 32-byte digest of the framed bytes.
* CACHE-002, CACHE-003 — the hasher is fed ``[chapter_revision, hash_id]`` first.
* CACHE-004..009 — the components in order, framed exactly as the spec says.
* CACHE-007 — :func:`outputs_digest`: a predecessor's output files framed like inputs.
Out of scope: sorting and de-duplicating the components (``hazremote.keys.resolve``), where a
predecessor's output files come from (the executor), and any I/O.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from hazremote.domain.digest import HASH_IDS, Digest, new_hasher
from hazremote.domain.model import CommandAction, HashName
from hazremote.keys.components import EnvSource, KeyComponents

__all__ = [
    "ACTION_COMMAND",
    "ACTION_SHELL",
    "CHAPTER_REVISION",
    "ENV_SET",
    "ENV_UNSET",
    "frame_bytes",
    "frame_key",
    "outputs_digest",
]

#: CACHE-003: bumped on any change to CACHE-004..009; invalidates every older key.
#: 1: each hard predecessor also frames the digest of its output files (CACHE-007).
CHAPTER_REVISION = 1
#: CACHE-005 action tags.
ACTION_COMMAND = 0x01
ACTION_SHELL = 0x02
#: CACHE-008 environment markers.
ENV_UNSET = 0x00
ENV_SET = 0x01

_U32 = struct.Struct("<I").pack
_EXEC = (b"\x00", b"\x01")
_ENV_UNSET = bytes((ENV_UNSET,))
_ENV_SET = bytes((ENV_SET,))


def _put_str(buf: bytearray, text: str) -> None:
    data = text.encode("utf-8")
    buf += _U32(len(data))
    buf += data


def frame_bytes(components: KeyComponents, hash_name: HashName) -> bytes:
    """The exact byte string fed to the hasher for ``components`` (CACHE-003..009)."""
    return bytes(_frame(components, hash_name))


def _frame(components: KeyComponents, hash_name: HashName) -> bytearray:
    buf = bytearray((CHAPTER_REVISION, HASH_IDS[hash_name]))
    action = components.action
    if isinstance(action, CommandAction):
        buf.append(ACTION_COMMAND)
        buf += _U32(len(action.argv))
        for arg in action.argv:
            _put_str(buf, arg)
    else:
        buf.append(ACTION_SHELL)
        _put_str(buf, action.shell)
        _put_str(buf, action.script)

    buf += _U32(len(components.inputs))
    u32 = _U32
    exec_bytes = _EXEC
    for item in components.inputs:  # the hot loop: thousands of inputs per task
        path = item.path.encode("utf-8")
        buf += u32(len(path))
        buf += path
        buf += exec_bytes[item.executable]
        buf += item.digest.raw

    buf += _U32(len(components.predecessors))
    for pred in components.predecessors:
        _put_str(buf, pred.task.project)
        _put_str(buf, pred.task.task)
        buf += pred.stdout.raw
        buf += pred.stderr.raw
        buf += pred.outputs.raw

    buf += _U32(len(components.env))
    for entry in components.env:
        _put_str(buf, entry.name)
        if entry.source is EnvSource.UNSET or entry.value is None:
            buf += _ENV_UNSET
        else:
            buf += _ENV_SET
            _put_str(buf, entry.value)

    _put_str(buf, components.cwd)
    buf += _U32(len(components.outputs))
    for pattern in components.outputs:
        _put_str(buf, pattern)
    return buf


def frame_key(components: KeyComponents, hash_name: HashName) -> Digest:
    """CACHE-001..009: the cache key of already-resolved ``components``. Pure."""
    hasher = new_hasher(hash_name)
    # one buffer, hashed once
    hasher.update(memoryview(_frame(components, hash_name)))
    return Digest(hasher.digest())


def outputs_digest(files: Iterable[tuple[str, bool, Digest]], hash_name: HashName) -> Digest:
    """CACHE-007: the outputs digest of a predecessor from its output files. Pure.

    The files are framed exactly like CACHE-006 input files — ``u32`` count, then per file,
    sorted by path, ``str`` workspace-absolute path, ``u8`` executable, ``d32`` content
    digest — and hashed with the workspace hash function (no revision header: the digest only
    ever appears inside a framed key, which has one).

    Args:
        files: ``(workspace-absolute path, executable, content digest)`` of each file; paths
            are unique (a manifest's, or one walk's).
        hash_name: The workspace hash function.
    """
    # str order is code-point order, which is UTF-8 byte order (CACHE-004 "sorting")
    ordered = sorted(files, key=_path_of)
    buf = bytearray(_U32(len(ordered)))
    u32 = _U32
    exec_bytes = _EXEC
    for path, executable, digest in ordered:
        data = path.encode("utf-8")
        buf += u32(len(data))
        buf += data
        buf += exec_bytes[bool(executable)]
        buf += digest.raw
    hasher = new_hasher(hash_name)
    hasher.update(memoryview(buf))
    return Digest(hasher.digest())


def _path_of(file: tuple[str, bool, Digest]) -> str:
    return file[0]
