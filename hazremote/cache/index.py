"""The local per-task index of recent keys, for ``haz why``.

A shared manifest records environment variable *names* only (CACHE-011). To tell the user
which value changed since the last stored run, ``haz why`` needs something local: after each
store the executor records the key and a fingerprint of every hashed env value here.

Fingerprints are HMAC-SHA256 of the value under a random salt created once per index
directory (mode 0600), never the values themselves: the index can be copied around (CI caches
of ``.haz/``, support bundles) without carrying secrets in clear, and equal values still
compare equal. ``haz why`` can therefore say *which* variables changed, not their old values.

Spec coverage:
* CACHE-011 — "``haz why`` compares env values through a local per-task index (under
  ``.haz/``), which is never uploaded": this module; it never leaves the machine.
* §5 ``haz why`` — :meth:`TaskIndex.recent_keys` gives the most recent stored keys of a task
  (newest first), whose manifests hold the components to compare.
Out of scope: the comparison of key components (``haz why``) and where ``.haz/`` is.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from hazremote.domain.digest import Digest
from hazremote.domain.refs import TaskId
from hazremote.fileio import replace_file

__all__ = ["DEFAULT_KEEP", "TaskIndex", "TaskKeyRecord"]

#: How many recent keys are kept per task.
DEFAULT_KEEP = 8
_SALT_NAME = "env-salt"
_SALT_SIZE = 32
_FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskKeyRecord:
    """One stored run of a task.

    Attributes:
        key: The cache key it was stored under.
        recorded_at_unix: When it was recorded.
        env: Hashed variable name → fingerprint of its value, or None when it was unset.
    """

    key: Digest
    recorded_at_unix: int
    env: Mapping[str, str | None] = field(default_factory=lambda: MappingProxyType({}))


class TaskIndex:
    """Recent keys per task, in ``directory`` (e.g. ``<workspace>/.haz/state/why``).

    Every failure to read is "nothing recorded"; every failure to write is a returned warning:
    the index only explains misses, it never affects a run.
    """

    def __init__(
        self,
        directory: Path,
        *,
        clock: Callable[[], float] = time.time,
        keep: int = DEFAULT_KEEP,
    ) -> None:
        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}")
        self._dir = directory
        self._clock = clock
        self._keep = keep
        self._salt: bytes | None = None

    def record_task_key(
        self, task: TaskId, key: Digest, env_values: Mapping[str, str | None]
    ) -> str | None:
        """Record that ``task`` was stored under ``key`` with these hashed env values.

        Args:
            task: The task.
            key: Its cache key.
            env_values: Every hashed variable (``from_host`` and ``override``) → its value, or
                None when unset on the host.

        Returns:
            None, or a warning when the index could not be written.
        """
        try:
            salt = self._load_salt(create=True)
            assert salt is not None
            record = TaskKeyRecord(
                key=key,
                recorded_at_unix=int(self._clock()),
                env=MappingProxyType(
                    {
                        name: None if value is None else _fingerprint(salt, value)
                        for name, value in sorted(env_values.items())
                    }
                ),
            )
            records = [r for r in self.recent_keys(task) if r.key != key]
            records.insert(0, record)
            self._write(task, records[: self._keep])
        except OSError as exc:
            return f"could not update the task index for {task}: {exc}"
        return None

    def recent_keys(self, task: TaskId) -> list[TaskKeyRecord]:
        """Recorded keys of ``task``, newest first; empty when none or unreadable."""
        try:
            document = json.loads(self._path(task).read_bytes())
            return [_record_from_json(item) for item in document["entries"]]
        except (OSError, ValueError, KeyError, TypeError):
            return []

    def changed_env(self, record: TaskKeyRecord, env_values: Mapping[str, str | None]) -> list[str]:
        """Names whose value differs between ``record`` and ``env_values`` (sorted).

        A name present on one side only counts as changed.
        """
        salt = self._load_salt(create=False)
        changed: list[str] = []
        for name in sorted(set(record.env) | set(env_values)):
            if name not in record.env or name not in env_values:
                changed.append(name)
                continue
            value = env_values[name]
            now = None if value is None or salt is None else _fingerprint(salt, value)
            if salt is None and value is not None:
                changed.append(name)  # the salt is gone: nothing can be compared
            elif now != record.env[name]:
                changed.append(name)
        return changed

    # -- storage -----------------------------------------------------------------------------

    def _path(self, task: TaskId) -> Path:
        # Task ids follow ID-001..003 ([A-Za-z0-9_-]), so "project:task" is a safe file name.
        return self._dir / f"{task.project}:{task.task}.json"

    def _write(self, task: TaskId, records: list[TaskKeyRecord]) -> None:
        document = {
            "version": _FORMAT_VERSION,
            "task": str(task),
            "entries": [
                {"key": r.key.hex, "recorded_at_unix": r.recorded_at_unix, "env": dict(r.env)}
                for r in records
            ],
        }
        path = self._path(task)
        text = json.dumps(document, indent=1, sort_keys=True) + "\n"
        replace_file(path, text.encode("utf-8"), prefix=f".{path.name}.")

    def _load_salt(self, *, create: bool) -> bytes | None:
        if self._salt is not None:
            return self._salt
        path = self._dir / _SALT_NAME
        try:
            salt = path.read_bytes()
        except FileNotFoundError:
            if not create:
                return None
            salt = self._create_salt(path)
        if len(salt) != _SALT_SIZE:
            if not create:
                return None
            raise OSError(f"{path} is damaged; delete it to start a new index")
        self._salt = salt
        return salt

    def _create_salt(self, path: Path) -> bytes:
        self._dir.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.{secrets.token_hex(6)}")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(_SALT_SIZE))
        try:
            # link() never replaces: when two processes race, both end up with the winner's.
            os.link(temp, path)
        except FileExistsError:
            pass
        finally:
            temp.unlink()
        return path.read_bytes()


def _fingerprint(salt: bytes, value: str) -> str:
    return hmac.new(salt, value.encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()


def _record_from_json(item: Mapping[str, object]) -> TaskKeyRecord:
    key = item["key"]
    at = item["recorded_at_unix"]
    env = item["env"]
    if not isinstance(key, str) or not isinstance(at, int) or not isinstance(env, dict):
        raise TypeError("malformed index entry")
    values: dict[str, str | None] = {}
    for name, value in env.items():
        if not isinstance(name, str) or not (value is None or isinstance(value, str)):
            raise TypeError("malformed index entry")
        values[name] = value
    return TaskKeyRecord(
        key=Digest.from_hex(key), recorded_at_unix=at, env=MappingProxyType(values)
    )
