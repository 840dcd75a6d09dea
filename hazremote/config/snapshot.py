"""A snapshot of a loaded workspace, reused while none of its configuration files changed.

Loading a 1,000-project workspace (YAML parsing, validation, the task graph) costs ~100 ms,
about a fifth of a fully cached ``haz run``. Like Nx's project-graph cache and git's index,
this module keeps the result in ``.haz/state/workspace.snapshot`` beside the stat signatures
of every path the load looked at, and reuses it while every signature still matches.

What makes that safe:

* **Everything the load depends on is checked.** :func:`~hazremote.config.load_workspace_traced`
  records every file it read or probed and every directory it listed, present or not, with
  its signature *as the load saw it* (:mod:`._trace`). A load is a function of exactly those
  (it reads no environment): a changed, added or removed ``haz.yml``, overlay or project
  directory changes the signature (type, inode, size, ``st_mtime_ns`` and ``st_ctime_ns``;
  ctime cannot be set back by ``touch -d``) of the file itself or of the directory listing
  it. Only successful loads are kept, so errors and their diagnostics are always reported
  afresh (CFG-040).
* **Changes during the load** are caught twice. A snapshot is published only if every path
  still has the signature the load saw (a file deleted or edited meanwhile discards it), and
  only if every recorded mtime and ctime is strictly older than the snapshot's temporary
  file, created before the load: git's racy-timestamp rule, for a change within the same
  timestamp tick that left the signature as it was.
* **The code is part of the key**: the Python version, this format's number, haz's version,
  and the size and mtime of every module of ``hazremote.config``, ``hazremote.graph`` and
  ``hazremote.domain`` (whose classes it holds), of ``hazremote.cli.context`` (which shapes
  the payload) and of PyYAML (which parses), so another haz never reads it.
* **Only this user's own snapshots are unpickled.** The body carries a keyed BLAKE3 MAC under
  a per-user secret kept outside every workspace (``$XDG_STATE_HOME/haz/snapshot.key``, else
  ``~/.local/state/haz/snapshot.key``, mode 0600), checked before anything is unpickled: a
  snapshot committed to a repository or planted in ``.haz/state`` is ignored, so even
  ``haz query`` on an untrusted checkout never runs code from it. The file is opened without
  following symlinks and must be a regular file of this user, writable by nobody else.
* **Failures cost only speed**: a missing, truncated, foreign, forged or corrupt snapshot, or
  one that cannot be written (no key, read-only state directory), means a normal load.

Commands that use a snapshot (``run``, ``why``, ``query``, ``graph``) therefore write
``.haz/state``; ``haz check`` always loads from scratch and writes nothing.

The payload is pickled with a reducer for frozen slotted dataclasses (the domain model) that
restores their fields without ``dataclasses.fields()``, 3x faster to load than the default.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import importlib.util
import io
import os
import pickle
import secrets
import stat
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import blake3

from hazremote.config._trace import Signature, path_signature

__all__ = ["SNAPSHOT_NAME", "WorkspaceSnapshot", "default_key_file"]

SNAPSHOT_NAME: Final = "workspace.snapshot"
_FORMAT: Final = 2
_CODE_PACKAGES: Final = ("config", "graph", "domain")
_CODE_FILES: Final = ("cli/context.py",)
_ABANDONED_NS: Final = 3600 * 10**9
_KEY_SIZE: Final = 32
_MAC_SIZE: Final = 32


def default_key_file(environ: Mapping[str, str]) -> Path | None:
    """Where this user's snapshot key lives (XDG state directory), or None without a home."""
    state = environ.get("XDG_STATE_HOME")
    if state:
        return Path(state) / "haz" / "snapshot.key"
    home = environ.get("HOME")
    return Path(home) / ".local" / "state" / "haz" / "snapshot.key" if home else None


def _code_fingerprint() -> tuple[object, ...]:
    from hazremote import __version__

    package = Path(__file__).resolve().parent.parent
    parts: list[object] = [_FORMAT, sys.version, __version__, str(package)]
    directories = [package / name for name in _CODE_PACKAGES]
    yaml = importlib.util.find_spec("yaml")  # located, not imported (~10 ms)
    if yaml is not None and yaml.origin is not None:
        directories.append(Path(yaml.origin).parent)
    for directory in directories:
        with os.scandir(directory) as it:
            for entry in sorted(it, key=lambda e: e.name):
                if entry.name.endswith((".py", ".so")):
                    info = entry.stat()
                    parts.append((str(directory), entry.name, info.st_size, info.st_mtime_ns))
    for name in _CODE_FILES:
        info = os.stat(package / name)
        parts.append((name, info.st_size, info.st_mtime_ns))
    return tuple(parts)


class WorkspaceSnapshot:
    """The snapshot file of one workspace; see the module docstring.

    Args:
        state_dir: The workspace's ``.haz/state``.
        root: The workspace root (part of the key).
        key_file: This user's secret (created on first use); None disables snapshots.
    """

    def __init__(self, state_dir: Path, root: Path, *, key_file: Path | None) -> None:
        self._path = state_dir / SNAPSHOT_NAME
        self._root = str(root)
        self._key_file = key_file

    def load_or_build(self, build: Callable[[], tuple[Any, Mapping[str, Signature]]]) -> Any:
        """The snapshot's payload if it is current, else ``build()``'s (published when safe).

        ``build`` returns the payload and the trace it depends on; its exceptions propagate
        and leave the previous snapshot in place.
        """
        key = self._key()
        if key is None:
            return build()[0]
        fingerprint = _code_fingerprint()
        cached = self._read(key, fingerprint)
        if cached is not None:
            return cached
        start = self._begin()
        try:
            payload, seen = build()
        except BaseException:
            if start is not None:
                _discard(start.fd, start.temp)
            raise
        if start is not None:
            self._publish(start, key, fingerprint, seen, payload)
        return payload

    # -- the key -----------------------------------------------------------------------------

    def _key(self) -> bytes | None:
        if self._key_file is None:
            return None
        key = _read_private(self._key_file, _KEY_SIZE + 1)
        if key is not None:
            return key if len(key) == _KEY_SIZE else None
        try:
            self._key_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(
                self._key_file,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
            )
        except FileExistsError:  # created by a concurrent haz: use theirs
            key = _read_private(self._key_file, _KEY_SIZE + 1)
            return key if key is not None and len(key) == _KEY_SIZE else None
        except OSError:
            return None
        key = secrets.token_bytes(_KEY_SIZE)
        try:
            os.write(fd, key)
        except OSError:
            return None
        finally:
            os.close(fd)
        return key

    # -- reading ---------------------------------------------------------------------------

    def _read(self, key: bytes, fingerprint: tuple[object, ...]) -> Any | None:
        data = _read_private(self._path, None)
        if data is None or len(data) < _MAC_SIZE:
            return None
        mac, body = data[:_MAC_SIZE], data[_MAC_SIZE:]
        if not secrets.compare_digest(mac, blake3.blake3(body, key=key).digest()):
            return None  # not written by this user's haz: never unpickled
        was_enabled = gc.isenabled()
        gc.disable()  # unpickling allocates thousands of objects and frees none
        try:
            header, signatures, payload = pickle.loads(body)  # authenticated above
            if header != (fingerprint, self._root):
                return None
            for path, signature in signatures:
                if path_signature(path) != signature:
                    return None
            return pickle.loads(payload)
        except Exception:  # any damage to the file means "no snapshot"
            return None
        finally:
            if was_enabled:
                gc.enable()

    # -- writing ---------------------------------------------------------------------------

    def _begin(self) -> _Start | None:
        """Create the temporary file whose mtime is the file system's clock now."""
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            fd, temp = tempfile.mkstemp(prefix=f".{SNAPSHOT_NAME}.", dir=self._path.parent)
        except OSError:
            return None
        try:
            return _Start(fd=fd, temp=temp, clock_ns=os.fstat(fd).st_mtime_ns)
        except OSError:
            _discard(fd, temp)
            return None

    def _publish(
        self,
        start: _Start,
        key: bytes,
        fingerprint: tuple[object, ...],
        seen: Mapping[str, Signature],
        payload: Any,
    ) -> None:
        try:
            signatures = sorted(seen.items())
            changed = any(
                path_signature(path) != recorded
                or (recorded is not None and max(recorded[3], recorded[4]) >= start.clock_ns)
                for path, recorded in signatures
            )
            body = None if changed else _body(fingerprint, self._root, signatures, payload)
        except Exception:  # a snapshot is an optimisation, never an error
            body = None
        if body is None:  # changed during the load, racy, or not picklable
            _discard(start.fd, start.temp)
            return
        try:
            with os.fdopen(start.fd, "wb") as handle:  # owns the descriptor from here
                handle.write(blake3.blake3(body, key=key).digest())
                handle.write(body)
            os.replace(start.temp, self._path)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(start.temp)
            return
        self._remove_abandoned(start.clock_ns)

    def _remove_abandoned(self, now_ns: int) -> None:
        """Temporary files of loads killed before publishing, older than an hour."""
        with contextlib.suppress(OSError), os.scandir(self._path.parent) as it:
            for entry in it:
                if entry.name.startswith(f".{SNAPSHOT_NAME}.") and (
                    entry.stat(follow_symlinks=False).st_mtime_ns < now_ns - _ABANDONED_NS
                ):
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)


@dataclasses.dataclass(frozen=True, slots=True)
class _Start:
    fd: int
    temp: str
    clock_ns: int


def _body(
    fingerprint: tuple[object, ...],
    root: str,
    signatures: list[tuple[str, Signature]],
    payload: Any,
) -> bytes:
    return pickle.dumps(
        ((fingerprint, root), signatures, _dumps(payload)), protocol=pickle.HIGHEST_PROTOCOL
    )


def _discard(fd: int, temp: str) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(temp)


def _read_private(path: Path, limit: int | None) -> bytes | None:
    """The bytes of a regular file of this user that nobody else may write, else None.

    Opened without following a symlink and without blocking (a FIFO planted there must not
    hang the command); ``limit`` bounds the read.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if (
            not stat.S_ISREG(info.st_mode)
            or info.st_uid != os.geteuid()
            or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        ):
            return None
        remaining = info.st_size if limit is None else min(limit, info.st_size)
        parts: list[bytes] = []
        while remaining > 0 and (chunk := os.read(fd, remaining)):
            parts.append(chunk)
            remaining -= len(chunk)
        return b"".join(parts)
    except OSError:
        return None
    finally:
        os.close(fd)


# -- pickling --------------------------------------------------------------------------------

_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = tuple(f.name for f in dataclasses.fields(cls))
        _FIELD_NAMES[cls] = names
    return names


def _rebuild(cls: type, values: tuple[object, ...]) -> object:
    obj: object = object.__new__(cls)
    set_field = object.__setattr__
    for name, value in zip(_field_names(cls), values, strict=True):
        set_field(obj, name, value)
    return obj


def _mapping_proxy(mapping: dict[Any, Any]) -> MappingProxyType[Any, Any]:
    return MappingProxyType(mapping)


class _Pickler(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        cls = type(obj)
        if cls is MappingProxyType:
            return _mapping_proxy, (dict(obj),)
        if dataclasses.is_dataclass(cls) and "__slots__" in cls.__dict__:
            return _rebuild, (cls, tuple(getattr(obj, n) for n in _field_names(cls)))
        return NotImplemented


def _dumps(payload: Any) -> bytes:
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(payload)
    return buffer.getvalue()
