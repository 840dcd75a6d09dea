"""Helpers of the cache tests: a workspace + cache environment, keys, snapshots."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from hazremote.cache import (
    Compression,
    LocalCache,
    Manifest,
    OutputFile,
    OutputRecord,
    RecordedKeyComponents,
    RestoreResult,
    StoreResult,
    StreamRecord,
)
from hazremote.cache.local import FetchedBlob
from hazremote.domain.digest import Digest, digest_bytes
from hazremote.domain.model import CommandAction, HashName
from hazremote.domain.patterns import PathPattern, parse_pattern
from hazremote.keys.components import KeyComponents
from hazremote.keys.framing import CHAPTER_REVISION

REVISION = CHAPTER_REVISION
HASH = HashName.BLAKE3


class FakeClock:
    """A settable clock (seconds since the epoch)."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_key(label: str) -> Digest:
    return digest_bytes(HASH, label.encode())


def components(outputs: tuple[str, ...] = ("/dist/**",)) -> KeyComponents:
    return KeyComponents(action=CommandAction(argv=("node", "build.js")), outputs=outputs)


def patterns(*texts: str) -> list[PathPattern]:
    return [parse_pattern(t, project_dir="") for t in texts]


@dataclass
class Sinks:
    stdout: list[bytes] = field(default_factory=list)
    stderr: list[bytes] = field(default_factory=list)

    @property
    def out(self) -> bytes:
        return b"".join(self.stdout)

    @property
    def err(self) -> bytes:
        return b"".join(self.stderr)


@dataclass
class Env:
    """A workspace, a cache and spool files under one tmp_path."""

    tmp: Path
    workspace: Path
    cache: LocalCache
    clock: FakeClock

    def write(self, path: str, data: bytes, mode: int = 0o644) -> Path:
        """Write workspace-absolute ``path`` in the workspace."""
        target = self.workspace / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        os.chmod(target, mode)
        return target

    def spool(self, name: str, data: bytes) -> Path:
        path = self.tmp / "spool" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    def restore(
        self,
        manifest: Manifest,
        *,
        fetched: Mapping[Digest, FetchedBlob] | None = None,
        outputs: str | tuple[str, ...] = "/dist/**",
    ) -> tuple[RestoreResult, Sinks]:
        """Restore ``manifest`` into the workspace (from ``fetched`` blobs if given) for a task
        with the ``outputs`` pattern(s)."""
        sinks = Sinks()
        result = self.cache.restore(
            manifest,
            fetched=fetched,
            workspace_root=self.workspace,
            output_patterns=patterns(*((outputs,) if isinstance(outputs, str) else outputs)),
            stdout_sink=sinks.stdout.append,
            stderr_sink=sinks.stderr.append,
        )
        return result, sinks

    def store(
        self,
        key: Digest,
        files: dict[str, bytes],
        *,
        stdout: bytes = b"",
        stderr: bytes = b"",
        modes: dict[str, int] | None = None,
    ) -> StoreResult:
        outputs = []
        for path, data in files.items():
            source = self.write(path, data, (modes or {}).get(path, 0o644))
            outputs.append(OutputFile(path=path, source=source))
        return self.cache.store(
            key=key,
            components=components(),
            stdout=self.spool(f"{key.hex}.out", stdout),
            stderr=self.spool(f"{key.hex}.err", stderr),
            outputs=outputs,
            duration_ms=42,
            producer="test@host",
        )


def restore(env: Env, manifest: Manifest, *output_patterns: str) -> RestoreResult:
    """Restore ``manifest`` for a task with ``output_patterns`` (default ``dist/**``)."""
    return env.restore(manifest, outputs=output_patterns or ("dist/**",))[0]


def tree_snapshot(root: Path) -> dict[str, tuple[int, int, bytes | None]]:
    """Every path under ``root`` → (mode, inode, bytes of files)."""
    snapshot: dict[str, tuple[int, int, bytes | None]] = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(dirpath) / name
            info = path.lstat()
            data = path.read_bytes() if path.is_file() and not path.is_symlink() else None
            snapshot[str(path.relative_to(root))] = (info.st_mode, info.st_ino, data)
    return snapshot


def plant_entry(
    cache: LocalCache,
    key: Digest,
    outputs: list[tuple[str, bytes, int]],
    *,
    stdout: bytes = b"",
    stderr: bytes = b"",
) -> Manifest:
    """Write an entry by hand, as a hostile or buggy producer could: raw blobs + manifest."""
    entry = cache.entry_dir(key)
    (entry / "outputs").mkdir(parents=True)
    records = []
    for path, data, mode in outputs:
        digest = digest_bytes(HASH, data)
        (entry / "outputs" / digest.hex).write_bytes(data)
        records.append(
            OutputRecord(
                path=path, hash=digest, size=len(data), mode=mode, compression=Compression.NONE
            )
        )
    streams = []
    for name, data in (("stdout", stdout), ("stderr", stderr)):
        (entry / name).write_bytes(data)
        streams.append(
            StreamRecord(
                hash=digest_bytes(HASH, data), size=len(data), compression=Compression.NONE
            )
        )
    manifest = Manifest(
        chapter_revision=REVISION,
        hash_function=HASH,
        key=key,
        created_at_unix=0,
        duration_ms=1,
        producer="mallory",
        stdout=streams[0],
        stderr=streams[1],
        outputs=tuple(records),
        key_components=RecordedKeyComponents.from_components(components()),
    )
    (entry / "manifest.json").write_bytes(manifest.to_json())
    return manifest
