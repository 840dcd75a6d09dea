"""Output collection: the files a task produced, by pattern, into output records plus blobs.

The one way ``haz run`` (the local cache's store) and a remote worker turn what a task left
in its workspace into the outputs of a manifest: find the files its output patterns match,
copy each into a content-addressed blob directory while hashing (and maybe compressing) it,
and record path, digest, size, mode and compression.

Spec coverage:
* CACHE-012/017 — outputs are the regular files (or symlinks to regular files) matched by the
  task's non-negated output patterns (:func:`matching_files`); a dangling link is no output.
* CACHE-017 — each output's bytes are hashed while copied (:func:`collect_files`); outputs of
  equal content share one blob; a relative link into the other outputs is recorded as a link
  (issue 12, :func:`links_to_store`), any other symlink as its content.
* PATH — the walk starts at each pattern's literal prefix and never enters ``.haz/``/``.git/``.
* Issue 13 — ``.haz-restore-*`` names are never collected nor entered; stale ones are removed.
Out of scope: the manifest's other fields and where the blob directory lives (the caller).
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from hazremote.cache._restore import reserved_path_problem
from hazremote.cache.codec import BlobCodec
from hazremote.cache.manifest import (
    Compression,
    OutputRecord,
    symlink_destination,
    symlink_text_problem,
    workspace_path_problem,
)
from hazremote.cache.staging import is_staging_name, staging_stale
from hazremote.cache.tier import OutputFile
from hazremote.domain.digest import Digest
from hazremote.domain.patterns import CONTROL_DIRS, PathPattern

__all__ = [
    "Collected",
    "CollectedBlob",
    "collect",
    "collect_files",
    "links_to_store",
    "matching_files",
    "outputs_problem",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class CollectedBlob:
    """One distinct blob written by a collection: ``path`` holds ``size`` uncompressed bytes
    of digest ``digest``, encoded as ``compression``."""

    digest: Digest
    size: int
    path: Path
    compression: Compression


@dataclass(frozen=True, slots=True, kw_only=True)
class Collected:
    """The outputs of a manifest (sorted by path, links included) and the blobs they name."""

    outputs: tuple[OutputRecord, ...]
    blobs: Mapping[Digest, CollectedBlob]


# -- finding ---------------------------------------------------------------------------------


def _is_file(path: str) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def _remove_if_stale(entry: os.DirEntry[str]) -> None:
    with contextlib.suppress(OSError):
        if staging_stale(entry.name, entry.stat(follow_symlinks=False)):
            os.unlink(entry.path)


def matching_files(root: Path, patterns: Iterable[PathPattern]) -> tuple[str, ...]:
    """Workspace-absolute paths of the files matched by ``patterns`` now, sorted, unique."""
    base = str(root).rstrip("/")
    found: set[str] = set()
    for pattern in patterns:
        if pattern.negated:
            continue
        if not pattern.glob:
            if not is_staging_name(pattern.absolute.rpartition("/")[2]) and _is_file(
                base + pattern.absolute
            ):
                found.add(pattern.absolute)
            continue
        start = pattern.literal_prefix
        stack = [start]
        seen_dirs: set[tuple[int, int]] = set()
        while stack:
            directory = stack.pop()
            try:
                st = os.stat(base + directory)
                identity = (st.st_dev, st.st_ino)
                if identity in seen_dirs:  # a symlink loop
                    continue
                seen_dirs.add(identity)
                entries = list(os.scandir(base + directory))
            except OSError:
                continue
            prefix = "" if directory == "/" else directory
            for entry in entries:
                rel = f"{prefix}/{entry.name}"
                if directory == "/" and entry.name in CONTROL_DIRS:
                    continue
                if is_staging_name(entry.name):
                    _remove_if_stale(entry)
                    continue
                try:
                    if entry.is_dir():
                        stack.append(rel)
                    elif entry.is_file() and pattern.matches(rel):
                        found.add(rel)
                except OSError:
                    continue
    return tuple(sorted(found))


# -- collecting ------------------------------------------------------------------------------


def outputs_problem(outputs: Sequence[OutputFile]) -> str | None:
    """Why ``outputs`` cannot be recorded (a bad, reserved or repeated path), or None."""
    seen: set[str] = set()
    for output in outputs:
        problem = workspace_path_problem(output.path) or reserved_path_problem(output.path)
        if problem is not None:
            return f"output path {output.path!r} {problem}"
        if output.path in seen:
            return f"output path {output.path!r} is listed twice"
        seen.add(output.path)
    return None


def collect_files(
    outputs: Sequence[OutputFile], *, blobs_dir: Path, codec: BlobCodec, fsync: bool
) -> Collected:
    """Copy ``outputs`` into ``blobs_dir`` (an existing directory of this collection's own) as
    blobs named by their digest's hex, and record them.

    Raises:
        OSError: an output could not be read or a blob written (``blobs_dir`` may hold a part).
        zstandard.ZstdError: an output changed size while it was compressed.
    """
    records: list[OutputRecord] = []
    stored: dict[Digest, CollectedBlob] = {}
    links = links_to_store(outputs)
    for index, output in enumerate(sorted(outputs, key=lambda o: o.path)):
        if output.path in links:
            continue
        part = blobs_dir / f".part-{index}"
        blob = codec.encode_file(output.source, part, fsync=fsync)
        known = stored.get(blob.digest)
        if known is not None:
            part.unlink()  # same content as an earlier output: one blob serves both
        else:
            known = CollectedBlob(
                digest=blob.digest,
                size=blob.size,
                path=blobs_dir / blob.digest.hex,
                compression=blob.compression,
            )
            part.rename(known.path)
            stored[blob.digest] = known
        records.append(
            OutputRecord(
                path=output.path,
                hash=blob.digest,
                size=blob.size,
                mode=blob.mode,
                compression=known.compression,
            )
        )
    return Collected(outputs=tuple(_with_links(records, links)), blobs=stored)


def collect(
    root: Path,
    patterns: Iterable[PathPattern],
    *,
    blobs_dir: Path,
    codec: BlobCodec,
    fsync: bool,
) -> Collected:
    """:func:`collect_files` of the files ``patterns`` match under the workspace ``root``.

    Raises:
        ValueError: a matched path cannot be recorded (:func:`outputs_problem`).
        OSError, zstandard.ZstdError: as :func:`collect_files`.
    """
    outputs = [OutputFile(path=p, source=root / p[1:]) for p in matching_files(root, patterns)]
    problem = outputs_problem(outputs)
    if problem is not None:
        raise ValueError(problem)
    return collect_files(outputs, blobs_dir=blobs_dir, codec=codec, fsync=fsync)


def links_to_store(outputs: Sequence[OutputFile]) -> dict[str, str]:
    """Output path → link text, for the outputs stored as symbolic links (issue 12).

    A symlink output is stored as a link when its text passes :func:`symlink_text_problem`,
    names (lexically, without leaving the workspace) another output of this store, and
    resolves on disk to the very file that output resolves to: so its recorded bytes are that
    output's, and a restore, which writes every output through real directories, recreates
    the same resolution. Anything else (absolute text, a link leaving the workspace or the
    outputs, ``..`` through a symlinked directory) is stored as the copy it resolves to.
    Links whose texts form a loop among themselves are stored as copies too.
    """
    by_path = {o.path: o for o in outputs}
    texts: dict[str, str] = {}
    for output in outputs:
        try:
            if not stat.S_ISLNK(os.lstat(output.source).st_mode):
                continue
            text = os.readlink(output.source)
        except OSError:
            continue
        if symlink_text_problem(text) is not None:
            continue
        destination = symlink_destination(output.path, text)
        target = by_path.get(destination) if destination is not None else None
        if target is None or target.path == output.path:
            continue
        try:
            resolved, named = os.stat(output.source), os.stat(target.source)
        except OSError:
            continue
        if stat.S_ISREG(resolved.st_mode) and (resolved.st_dev, resolved.st_ino) == (
            named.st_dev,
            named.st_ino,
        ):
            texts[output.path] = text
    # A chain of links must end at an output stored as a file: break loops.
    for start in sorted(texts):
        seen: list[str] = []
        path: str | None = start
        while path is not None and path in texts and path not in seen:
            seen.append(path)
            path = symlink_destination(path, texts[path])
        if path is not None and path in seen:
            del texts[path]
    return texts


def _with_links(records: list[OutputRecord], links: Mapping[str, str]) -> list[OutputRecord]:
    """``records`` (the outputs stored as files) plus one record per link, sorted by path: a
    link carries the hash, size, mode and compression of the file its chain ends at."""
    by_path = {r.path: r for r in records}

    def final(path: str) -> OutputRecord:
        while path in links:
            path = symlink_destination(path, links[path]) or ""
        return by_path[path]

    linked = [replace(final(path), path=path, symlink=text) for path, text in links.items()]
    return sorted(records + linked, key=lambda r: r.path)
