"""A snapshot of a loaded workspace, reused while none of its configuration files changed.

Loading a 1,000-project workspace (YAML parsing, validation, the task graph) costs ~100 ms,
about a fifth of a fully cached ``haz run``. Like Nx's project-graph cache and git's index,
this module keeps the result in ``.haz/state/workspace.snapshot`` beside the stat signatures
of every path the load looked at, and reuses it while every signature still matches.

What makes that safe:

* **Everything the load depends on is checked.** :func:`~hazremote.config.load_workspace_traced`
  reports every file it read or probed and every directory it listed, present or not. A load
  is a function of exactly those (it reads no environment): a changed, added or removed
  ``haz.yml``, overlay or project directory changes the signature (``st_ino``, size, mode,
  ``st_mtime_ns`` and ``st_ctime_ns``; ctime cannot be set back by ``touch -d``) of the file
  itself or of the directory listing it. Only successful loads are kept, so errors and their
  diagnostics are always reported afresh (CFG-040).
* **Racy timestamps** (git's rule): a file changed in the same timestamp tick as the load
  could keep its signature with new contents. The snapshot's temporary file is created before
  the load, so its mtime is the file system's clock at the start; the snapshot is published
  only when every recorded mtime and ctime is strictly older.
* **The code is part of the key**: the snapshot records the Python version, this format's
  number and the size and mtime of every module of ``hazremote.config``, ``hazremote.graph``
  and ``hazremote.domain`` (whose classes it holds), so another haz never reads it.
* **Failures cost only speed**: a missing, truncated, foreign or corrupt snapshot, or one
  that cannot be written, means a normal load. It holds configuration only (the commands are
  in the ``haz.yml`` files it mirrors), lives in haz's own state directory and is never shared
  or uploaded; like those files, whoever can write it can already choose what ``haz run``
  executes (docs/security.md).

The payload is pickled with a reducer for frozen slotted dataclasses (the domain model) that
restores their fields without ``dataclasses.fields()``, 3x faster to load than the default.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import io
import os
import pickle
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

__all__ = ["SNAPSHOT_NAME", "WorkspaceSnapshot"]

SNAPSHOT_NAME: Final = "workspace.snapshot"
_FORMAT: Final = 1
_CODE_PACKAGES: Final = ("config", "graph", "domain")
_ABANDONED_NS: Final = 3600 * 10**9

# (file type bits, inode, size, mtime ns, ctime ns), or None for a path that did not exist.
_Signature = tuple[int, int, int, int, int] | None


def _signature(path: str) -> _Signature:
    try:
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return (info.st_mode & 0o170000, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def _code_fingerprint() -> tuple[object, ...]:
    package = Path(__file__).resolve().parent.parent
    parts: list[object] = [_FORMAT, sys.version, str(package)]
    for name in _CODE_PACKAGES:
        with os.scandir(package / name) as it:
            for entry in sorted(it, key=lambda e: e.name):
                if entry.name.endswith(".py"):
                    info = entry.stat()
                    parts.append((name, entry.name, info.st_size, info.st_mtime_ns))
    return tuple(parts)


class WorkspaceSnapshot:
    """The snapshot file of one workspace; see the module docstring."""

    def __init__(self, state_dir: Path, root: Path) -> None:
        self._path = state_dir / SNAPSHOT_NAME
        self._root = str(root)

    def load_or_build(self, build: Callable[[], tuple[Any, frozenset[str]]]) -> Any:
        """The snapshot's payload if it is current, else ``build()``'s (published when safe).

        ``build`` returns the payload and every path it depends on; its exceptions propagate
        and leave the previous snapshot in place.
        """
        fingerprint = _code_fingerprint()
        cached = self._read(fingerprint)
        if cached is not None:
            return cached
        start = self._begin()
        payload, seen = build()
        if start is not None:
            self._publish(start, fingerprint, seen, payload)
        return payload

    # -- reading ---------------------------------------------------------------------------

    def _read(self, fingerprint: tuple[object, ...]) -> Any | None:
        try:
            with open(self._path, "rb") as handle:
                data = handle.read()
        except OSError:
            return None
        was_enabled = gc.isenabled()
        gc.disable()  # unpickling allocates thousands of objects and frees none
        try:
            header, signatures, payload = pickle.loads(data)  # our own state file
            if header != (fingerprint, self._root):
                return None
            for path, signature in signatures:
                if _signature(path) != signature:
                    return None
            return pickle.loads(payload)  # trusted: see the module docstring
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
        fingerprint: tuple[object, ...],
        seen: Iterable[str],
        payload: Any,
    ) -> None:
        try:
            signatures = [(path, _signature(path)) for path in sorted(seen)]
            if any(
                sig is not None and max(sig[3], sig[4]) >= start.clock_ns for _, sig in signatures
            ):
                _discard(start.fd, start.temp)  # racy: changed since the load began
                return
            body = pickle.dumps(
                ((fingerprint, self._root), signatures, _dumps(payload)),
                protocol=pickle.HIGHEST_PROTOCOL,
            )
            with os.fdopen(start.fd, "wb") as handle:
                handle.write(body)
            os.replace(start.temp, self._path)
        except Exception:  # a snapshot is an optimisation, never an error
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


def _discard(fd: int, temp: str) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(temp)


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
