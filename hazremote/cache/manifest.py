"""The cache manifest: what a stored successful run consists of, as a strict JSON document.

The same document is stored locally, in the cache service and by workers; this module only
parses and serialises bytes.

Spec coverage:
* CACHE-011 — every field and type; unknown fields and duplicate keys rejected; no env values.
* CACHE-010..013 — the per-blob ``compression`` marker (``none`` | ``zstd``).
* CACHE-014..016 — :class:`ManifestSchemaError` tells a schema mismatch from corruption.
* CACHE-007 — a revision-0 document parses when revision 0 is asked for.
* SEC-001 — output paths are workspace-absolute and plain; modes are permission bits only.
* SEC-001 — a ``symlink`` text is relative, in the workspace, names another output (issue 12).
Out of scope: where manifests are stored, whether their blobs exist (``local``), and the
declared-output and symlink checks of a restore (``_restore``).
"""

from __future__ import annotations

import enum
import json
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

from hazremote.domain.digest import Digest
from hazremote.domain.model import Action, CommandAction, HashName, ShellAction
from hazremote.domain.patterns import parse_pattern
from hazremote.errors import HazError, PatternError
from hazremote.keys.components import EnvSource, KeyComponents
from hazremote.keys.framing import outputs_digest

__all__ = [
    "MAX_MODE",
    "MAX_SYMLINK_BYTES",
    "Compression",
    "Manifest",
    "ManifestError",
    "ManifestSchemaError",
    "OutputRecord",
    "RecordedEnv",
    "RecordedInput",
    "RecordedKeyComponents",
    "RecordedPredecessor",
    "StreamRecord",
    "output_links_problem",
    "parse_key_components",
    "parse_manifest",
    "symlink_destination",
    "symlink_text_problem",
    "workspace_path_problem",
]

#: CACHE-011: ``mode`` holds permission bits only (setuid/setgid/sticky included at most).
MAX_MODE = 0o7777
#: A link text longer than this is refused (Linux' PATH_MAX, less its terminating NUL).
MAX_SYMLINK_BYTES = 4095
_HEX64 = re.compile(r"[0-9a-f]{64}")
_E = TypeVar("_E", bound=enum.Enum)
_T = TypeVar("_T")
_TASK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}:[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


class ManifestError(HazError):
    """A manifest document is not a valid CACHE-011 manifest; the message says where and why."""


class ManifestSchemaError(ManifestError):
    """A well-formed-enough manifest of another chapter revision or hash function (CACHE-015)."""


class Compression(enum.Enum):
    """CACHE-010..013: how a blob is stored at rest."""

    NONE = "none"
    ZSTD = "zstd"


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamRecord:
    """A recorded stdout or stderr: digest and size of the uncompressed bytes."""

    hash: Digest
    size: int
    compression: Compression

    def to_json(self) -> dict[str, object]:
        return {"hash": self.hash.hex, "size": self.size, "compression": self.compression.value}


@dataclass(frozen=True, slots=True, kw_only=True)
class OutputRecord:
    """One output file: workspace-absolute ``path``, content digest and size, permission bits.

    ``symlink`` set: the output is a symbolic link with that (relative) text, and ``hash``,
    ``size`` and ``mode`` describe the file it resolves to, another output of the manifest
    (:func:`output_links_problem`); no blob of its own.
    """

    path: str
    hash: Digest
    size: int
    mode: int
    compression: Compression
    symlink: str | None = None

    def to_json(self) -> dict[str, object]:
        document: dict[str, object] = {
            "path": self.path,
            "hash": self.hash.hex,
            "size": self.size,
            "mode": self.mode,
            "compression": self.compression.value,
        }
        if self.symlink is not None:  # absent, not null: older entries keep their bytes
            document["symlink"] = self.symlink
        return document


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordedInput:
    path: str
    hash: Digest


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordedPredecessor:
    """A predecessor as recorded: ``outputs`` is None only in a revision-0 document."""

    task: str  # "project:task"
    stdout: Digest
    stderr: Digest
    outputs: Digest | None

    def to_json(self) -> list[str]:
        if self.outputs is None:  # chapter revision 0 had no outputs digest (CACHE-007)
            return [self.task, self.stdout.hex, self.stderr.hex]
        return [self.task, self.stdout.hex, self.stderr.hex, self.outputs.hex]


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordedEnv:
    name: str
    source: EnvSource


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordedKeyComponents:
    """CACHE-011 ``key_components``: what ``haz why`` compares; never an env value."""

    action: Action
    inputs: tuple[RecordedInput, ...]
    predecessors: tuple[RecordedPredecessor, ...]
    env: tuple[RecordedEnv, ...]
    cwd: str
    outputs: tuple[str, ...]

    @classmethod
    def from_components(cls, components: KeyComponents) -> RecordedKeyComponents:
        return cls(
            action=components.action,
            inputs=tuple(RecordedInput(path=f.path, hash=f.digest) for f in components.inputs),
            predecessors=tuple(
                RecordedPredecessor(
                    task=str(p.task), stdout=p.stdout, stderr=p.stderr, outputs=p.outputs
                )
                for p in components.predecessors
            ),
            env=tuple(RecordedEnv(name=e.name, source=e.source) for e in components.env),
            cwd=components.cwd,
            outputs=components.outputs,
        )

    def to_json(self) -> dict[str, object]:
        action: dict[str, object]
        if isinstance(self.action, CommandAction):
            action = {"command": list(self.action.argv)}
        else:
            action = {"shell": self.action.shell, "script": self.action.script}
        return {
            "action": action,
            "inputs": [[i.path, i.hash.hex] for i in self.inputs],
            "predecessors": [p.to_json() for p in self.predecessors],
            "env": [[e.name, e.source.value] for e in self.env],
            "cwd": self.cwd,
            "outputs": list(self.outputs),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Manifest:
    """A CACHE-011 manifest. Build with keywords; :meth:`to_json` is deterministic."""

    chapter_revision: int
    hash_function: HashName
    key: Digest
    created_at_unix: int
    exit_code: int = 0
    duration_ms: int
    producer: str
    stdout: StreamRecord
    stderr: StreamRecord
    outputs: tuple[OutputRecord, ...]
    key_components: RecordedKeyComponents

    def outputs_digest(self) -> Digest:
        """CACHE-007: the outputs digest this entry gives its dependants' keys — its output
        records as ``(path, executable, hash)``, executable being any ``x`` bit of the mode."""
        return outputs_digest(
            [(o.path, bool(o.mode & 0o111), o.hash) for o in self.outputs], self.hash_function
        )

    def to_json_object(self) -> dict[str, object]:
        return {
            "chapter_revision": self.chapter_revision,
            "hash_function": self.hash_function.value,
            "key": self.key.hex,
            "created_at_unix": self.created_at_unix,
            "exit_code": self.exit_code,
            "duration_ms": self.duration_ms,
            "producer": self.producer,
            "stdout": self.stdout.to_json(),
            "stderr": self.stderr.to_json(),
            "outputs": [o.to_json() for o in self.outputs],
            "key_components": self.key_components.to_json(),
        }

    def to_json(self) -> bytes:
        """UTF-8 JSON, fields in spec order, compact, newline-terminated: equal values give
        equal bytes."""
        text = json.dumps(
            self.to_json_object(), ensure_ascii=False, separators=(",", ":"), allow_nan=False
        )
        return text.encode("utf-8") + b"\n"


def workspace_path_problem(path: str) -> str | None:
    """Why ``path`` is not a workspace-absolute file path (PATH, SEC-001), or None."""
    if not path.startswith("/"):
        return "is not workspace-absolute (must start with '/')"
    if "\x00" in path:
        return "contains a NUL byte"
    for segment in path[1:].split("/"):
        if segment == "":
            return "has an empty segment"
        if segment in (".", ".."):
            return f"has a {segment!r} segment"
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    return None


def symlink_text_problem(text: str) -> str | None:
    """Why ``text`` is not a link text an output may carry (CACHE-011, SEC-001), or None.

    Accepted: relative text in the plain form ``../../dir/name`` — leading ``..`` segments,
    then names; no ``.``, empty or later ``..`` segment, no NUL, valid UTF-8, at most
    :data:`MAX_SYMLINK_BYTES`. Such text resolves the same lexically and on disk whenever
    the directories it names are real ones, which the restore guarantees.
    """
    if not text:
        return "is empty"
    if "\x00" in text:
        return "contains a NUL byte"
    if text.startswith("/"):
        return "is absolute"
    try:
        length = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    if length > MAX_SYMLINK_BYTES:
        return f"is longer than {MAX_SYMLINK_BYTES} bytes"
    segments = text.split("/")
    ups = 0
    while ups < len(segments) and segments[ups] == "..":
        ups += 1
    if ups == len(segments):
        return "names a directory, not a file"
    for segment in segments[ups:]:
        if segment in ("", ".", ".."):
            return f"has a {segment!r} segment after its leading '..' segments"
    return None


def symlink_destination(path: str, text: str) -> str | None:
    """The workspace-absolute path a link at ``path`` with valid ``text`` names, or None when
    it leaves the workspace."""
    directory = path.rpartition("/")[0].split("/")[1:]
    segments = text.split("/")
    while segments and segments[0] == "..":
        if not directory:
            return None
        directory.pop()
        segments.pop(0)
    return "/" + "/".join(directory + segments)


def output_links_problem(outputs: Sequence[OutputRecord]) -> tuple[int, str] | None:
    """The first link record that a restore could not reproduce safely, as (index, why).

    Each link's text must be valid (:func:`symlink_text_problem`), stay inside the workspace,
    and name another output of the same list whose hash, size and mode it shares; following
    links from link to link must end at a regular output (no loop). A restore that writes
    every output, each through real directories only, then recreates exactly the resolution
    the manifest describes.
    """
    if all(record.symlink is None for record in outputs):
        return None  # nearly every manifest: no index to build
    by_path: dict[str, OutputRecord] = {}
    for record in outputs:
        by_path.setdefault(record.path, record)
    for index, record in enumerate(outputs):
        if record.symlink is None:
            continue
        problem = symlink_text_problem(record.symlink)
        if problem is not None:
            return index, f"link text {record.symlink!r} {problem}"
        destination = symlink_destination(record.path, record.symlink)
        if destination is None:
            return index, f"link text {record.symlink!r} leaves the workspace"
        target = by_path.get(destination)
        if target is None:
            return index, f"link target {destination!r} is not an output of this manifest"
        if (target.hash, target.size, target.mode) != (record.hash, record.size, record.mode):
            return index, (
                f"hash, size or mode differ from those of its link target {destination!r}"
            )
        seen = {record.path}
        while target.symlink is not None:
            if target.path in seen:
                return index, f"links loop through {target.path!r}"
            seen.add(target.path)
            following = symlink_destination(target.path, target.symlink)
            if following is None or following not in by_path:
                break  # reported at the index of ``target`` itself
            target = by_path[following]
    return None


# ---------------------------------------------------------------------------------------------
# Parsing. Each helper raises ManifestError naming the JSON location (``outputs[2].mode``).


def _fail(where: str, message: str) -> NoReturn:
    raise ManifestError(f"manifest {where}: {message}" if where else f"manifest: {message}")


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, value in pairs:
        if name in result:
            _fail("", f"duplicate key {name!r}")
        result[name] = value
    return result


def _reject_constant(name: str) -> NoReturn:
    _fail("", f"{name} is not a JSON number")


def _object(value: object, where: str, fields: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        _fail(where, f"expected an object, got {_kind(value)}")
    unknown = sorted(set(value) - set(fields))
    if unknown:
        _fail(where, f"unknown field {unknown[0]!r}")
    missing = [f for f in fields if f not in value]
    if missing:
        _fail(where, f"missing field {missing[0]!r}")
    return value


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number with a fraction"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _str(value: object, where: str) -> str:
    if not isinstance(value, str):
        _fail(where, f"expected a string, got {_kind(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        _fail(where, "string is not valid UTF-8 (lone surrogate escape)")
    return value


def _int(value: object, where: str, *, low: int = 0, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(where, f"expected an integer, got {_kind(value)}")
    if value < low or (high is not None and value > high):
        bound = f"{low}..{high}" if high is not None else f">= {low}"
        _fail(where, f"integer {value} out of range ({bound})")
    return value


def _list(value: object, where: str) -> list[Any]:
    if not isinstance(value, list):
        _fail(where, f"expected a list, got {_kind(value)}")
    return value


def _digest(value: object, where: str) -> Digest:
    # Fast path (a manifest holds dozens): exactly 64 lowercase hex digits, checked with C-level
    # calls; anything else takes the checks below, which name the problem.
    if type(value) is str and len(value) == 64:
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            raw = b""
        if raw.hex() == value:
            return Digest(raw)
    text = _str(value, where)
    if _HEX64.fullmatch(text) is None:
        _fail(where, f"expected 64 lowercase hex characters, got {text!r}")
    return Digest(bytes.fromhex(text))


def _enum(kind: type[_E], value: object, where: str) -> _E:
    text = _str(value, where)
    try:
        return kind(text)
    except ValueError:
        allowed = " | ".join(repr(m.value) for m in kind)
        _fail(where, f"expected {allowed}, got {text!r}")


def _path(value: object, where: str) -> str:
    path = _str(value, where)
    problem = workspace_path_problem(path)
    if problem is not None:
        _fail(where, f"path {path!r} {problem}")
    return path


def _tuple_of(value: object, where: str, item: Callable[[object, str], _T]) -> tuple[_T, ...]:
    return tuple(item(v, f"{where}[{i}]") for i, v in enumerate(_list(value, where)))


def _stream(value: object, where: str) -> StreamRecord:
    obj = _object(value, where, ("hash", "size", "compression"))
    return StreamRecord(
        hash=_digest(obj["hash"], f"{where}.hash"),
        size=_int(obj["size"], f"{where}.size"),
        compression=_enum(Compression, obj["compression"], f"{where}.compression"),
    )


_OUTPUT_FIELDS = ("path", "hash", "size", "mode", "compression")
_LINK_FIELDS = (*_OUTPUT_FIELDS, "symlink")


def _output(value: object, where: str) -> OutputRecord:
    link = isinstance(value, dict) and "symlink" in value
    obj = _object(value, where, _LINK_FIELDS if link else _OUTPUT_FIELDS)
    return OutputRecord(
        path=_path(obj["path"], f"{where}.path"),
        hash=_digest(obj["hash"], f"{where}.hash"),
        size=_int(obj["size"], f"{where}.size"),
        mode=_int(obj["mode"], f"{where}.mode", high=MAX_MODE),
        compression=_enum(Compression, obj["compression"], f"{where}.compression"),
        symlink=_str(obj["symlink"], f"{where}.symlink") if link else None,
    )


def _fixed_list(value: object, where: str, length: int) -> list[Any]:
    items = _list(value, where)
    if len(items) != length:
        _fail(where, f"expected a list of {length} items, got {len(items)}")
    return items


def _recorded_input(value: object, where: str) -> RecordedInput:
    path, digest = _fixed_list(value, where, 2)
    return RecordedInput(path=_path(path, f"{where}[0]"), hash=_digest(digest, f"{where}[1]"))


def _recorded_inputs(value: object, where: str) -> tuple[RecordedInput, ...]:
    """``key_components.inputs``: the largest list of a manifest, so well-formed items take a
    fast path of C-level string checks that accepts a subset of what :func:`_recorded_input`
    accepts (plain paths: no ``.``-prefixed segment, ASCII); anything else goes through it,
    which names the exact location of a problem."""
    items = _list(value, where)
    parsed: list[RecordedInput] = []
    append = parsed.append
    fromhex = bytes.fromhex
    for index, item in enumerate(items):
        if type(item) is list and len(item) == 2:
            path, text = item
            if (
                type(path) is str
                and type(text) is str
                and len(text) == 64
                and path[:1] == "/"
                and path.isascii()
                and "//" not in path
                and "/." not in path
                and path[-1] != "/"
                and "\x00" not in path
            ):
                try:
                    raw = fromhex(text)
                except ValueError:
                    raw = b""
                if raw.hex() == text:  # exactly 64 lowercase hex digits
                    append(RecordedInput(path=path, hash=Digest(raw)))
                    continue
        append(_recorded_input(item, f"{where}[{index}]"))
    return tuple(parsed)


def _recorded_predecessor(value: object, where: str) -> RecordedPredecessor:
    """CACHE-011 (chapter revision 1): ``[task id, stdout, stderr, outputs]``."""
    task, out, err, outputs = _fixed_list(value, where, 4)
    return RecordedPredecessor(
        task=_task_id(task, f"{where}[0]"),
        stdout=_digest(out, f"{where}[1]"),
        stderr=_digest(err, f"{where}[2]"),
        outputs=_digest(outputs, f"{where}[3]"),
    )


def _recorded_predecessor_rev0(value: object, where: str) -> RecordedPredecessor:
    """Chapter revision 0: ``[task id, stdout, stderr]`` (no outputs digest yet)."""
    task, out, err = _fixed_list(value, where, 3)
    return RecordedPredecessor(
        task=_task_id(task, f"{where}[0]"),
        stdout=_digest(out, f"{where}[1]"),
        stderr=_digest(err, f"{where}[2]"),
        outputs=None,
    )


def _task_id(value: object, where: str) -> str:
    text = _str(value, where)
    if _TASK_ID.fullmatch(text) is None:
        _fail(where, f"expected a task id project:task, got {text!r}")
    return text


def _recorded_env(value: object, where: str) -> RecordedEnv:
    name, source = _fixed_list(value, where, 2)
    name_text = _str(name, f"{where}[0]")
    if not name_text or "=" in name_text or "\x00" in name_text:
        _fail(f"{where}[0]", f"invalid environment variable name {name_text!r}")
    return RecordedEnv(name=name_text, source=_enum(EnvSource, source, f"{where}[1]"))


def _output_pattern(value: object, where: str) -> str:
    text = _str(value, where)
    if not text.startswith("/"):
        _fail(where, f"output pattern {text!r} is not workspace-absolute")
    try:
        parse_pattern(text, project_dir="")
    except PatternError as exc:
        _fail(where, str(exc))
    return text


def _action(value: object, where: str) -> Action:
    if isinstance(value, dict) and "command" in value:
        obj = _object(value, where, ("command",))
        argv = _tuple_of(obj["command"], f"{where}.command", _str)
        if not argv:
            _fail(f"{where}.command", "an argv has at least one item")
        return CommandAction(argv=argv)
    obj = _object(value, where, ("shell", "script"))
    return ShellAction(
        shell=_str(obj["shell"], f"{where}.shell"), script=_str(obj["script"], f"{where}.script")
    )


def _key_components(value: object, where: str, revision: int) -> RecordedKeyComponents:
    obj = _object(value, where, ("action", "inputs", "predecessors", "env", "cwd", "outputs"))
    predecessor = _recorded_predecessor_rev0 if revision == 0 else _recorded_predecessor
    return RecordedKeyComponents(
        action=_action(obj["action"], f"{where}.action"),
        inputs=_recorded_inputs(obj["inputs"], f"{where}.inputs"),
        predecessors=_tuple_of(obj["predecessors"], f"{where}.predecessors", predecessor),
        env=_tuple_of(obj["env"], f"{where}.env", _recorded_env),
        cwd=_str(obj["cwd"], f"{where}.cwd"),
        outputs=_tuple_of(obj["outputs"], f"{where}.outputs", _output_pattern),
    )


_FIELDS = (
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
)


def parse_key_components(data: bytes, *, chapter_revision: int) -> RecordedKeyComponents:
    """Parse a CACHE-011 ``key_components`` object on its own, as strictly as in a manifest
    (a remote action carries it, RX-002).

    Raises:
        ManifestError: the document is malformed; the message names the field.
    """
    return _key_components(_load_json(data), "key_components", chapter_revision)


def _load_json(data: bytes) -> object:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError(f"manifest: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        return json.loads(
            text, object_pairs_hook=_no_duplicate_keys, parse_constant=_reject_constant
        )
    except json.JSONDecodeError as exc:
        raise ManifestError(f"manifest: invalid JSON: {exc}") from None
    except ValueError:
        # json's scanner converts digits with int(), which refuses more than
        # sys.get_int_max_str_digits() of them with a plain ValueError (issue 13).
        raise ManifestError(
            f"manifest: invalid JSON: an integer of more than {sys.get_int_max_str_digits()} digits"
        ) from None
    except RecursionError:
        raise ManifestError("manifest: invalid JSON: nested too deeply") from None


def parse_manifest(data: bytes, *, chapter_revision: int, hash_name: HashName) -> Manifest:
    """Parse and validate a manifest document strictly (CACHE-011).

    The schema (``chapter_revision`` and ``hash_function``) is checked before anything else,
    so a manifest written by a later revision with different fields is reported as a schema
    mismatch rather than as corrupt.

    Args:
        data: The document bytes (UTF-8 JSON).
        chapter_revision: The revision this client derives keys with (CACHE-003).
        hash_name: The workspace hash function (CACHE-002).

    Raises:
        ManifestSchemaError: the revision or hash function differ from the expected ones.
        ManifestError: anything else is wrong; the message names the field.
    """
    document = _load_json(data)
    if not isinstance(document, dict):
        _fail("", f"expected an object, got {_kind(document)}")
    revision = document.get("chapter_revision")
    hash_text = document.get("hash_function")
    if (
        isinstance(revision, int)
        and not isinstance(revision, bool)
        and revision != (chapter_revision)
    ):
        raise ManifestSchemaError(
            f"manifest: chapter_revision {revision}, this client uses {chapter_revision}"
        )
    if isinstance(hash_text, str) and hash_text != hash_name.value:
        raise ManifestSchemaError(
            f"manifest: hash_function {hash_text!r}, this workspace uses {hash_name.value!r}"
        )
    obj = _object(document, "", _FIELDS)
    outputs = _tuple_of(obj["outputs"], "outputs", _output)
    seen: set[str] = set()
    for index, record in enumerate(outputs):
        if record.path in seen:
            _fail(f"outputs[{index}].path", f"duplicate output path {record.path!r}")
        seen.add(record.path)
    link_problem = output_links_problem(outputs)
    if link_problem is not None:
        _fail(f"outputs[{link_problem[0]}].symlink", link_problem[1])
    return Manifest(
        chapter_revision=_int(obj["chapter_revision"], "chapter_revision"),
        hash_function=_enum(HashName, obj["hash_function"], "hash_function"),
        key=_digest(obj["key"], "key"),
        created_at_unix=_int(obj["created_at_unix"], "created_at_unix"),
        exit_code=_int(obj["exit_code"], "exit_code", high=0),
        duration_ms=_int(obj["duration_ms"], "duration_ms"),
        producer=_str(obj["producer"], "producer"),
        stdout=_stream(obj["stdout"], "stdout"),
        stderr=_stream(obj["stderr"], "stderr"),
        outputs=outputs,
        key_components=_key_components(obj["key_components"], "key_components", chapter_revision),
    )
