"""RC-001: remote hits become local entries in a helper process, off the run's critical path.

The run restores a remote hit from its verified download itself; importing it into the local
cache (CACHE-017: staging directory, blob files, manifest last, one rename) is handed to a
child process, ``python -m hazremote.cache.backfill``. A thread would not do: it shares the
interpreter lock with the restores, and each of their system calls became a hand-over to it
(~0.35 s of a 1,000-task replay); done inline, the imports' file-system latency sat on the
critical path. The child runs on another core; the run waits for it only at its end.

Spec coverage:
* RC-001 — every restored remote hit is imported with :meth:`LocalCache.import_entry` in the
  child: strict manifest parse (CACHE-011), every blob verified again (RC-004), one atomic
  publish. A failed import, or a child that cannot start or dies, is a warning of the run,
  never an error: the entry is simply fetched again by a later run.
Out of scope: what to import (the lifecycle) and fetching it (``hazremote.remote``).

Frames on the child's stdin, integers big-endian::

    u32  length of the rest of the frame (0: end of input)
    u16  + label (UTF-8)           names the task in warnings
    u32  + manifest document        CACHE-011 JSON
    u32  + cleanup directory        removed after the import (UTF-8 path; empty: none)
    u32  blob count, then per blob: 32-byte digest, u8 kind (0: bytes, 1: file path),
         u32 + payload

The child writes each warning as one ``W <text>`` line to its stdout; the parent points its
stdout and stderr at a file and reads it when the child has finished.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import queue
import shutil
import signal
import struct
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TextIO

from hazremote.cache.codec import FetchedBlob, VerifiedBlob, verified_blob, write_all
from hazremote.cache.local import CacheOptions, FsyncPolicy, LocalCache
from hazremote.cache.manifest import Manifest, ManifestError, parse_manifest
from hazremote.domain.digest import DIGEST_SIZE, Digest
from hazremote.domain.model import HashName

__all__ = [
    "BackfillFrameError",
    "ProcessBackfill",
    "decode_frame",
    "encode_frame",
    "main",
    "serve",
]

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_KIND_BYTES = 0
_KIND_FILE = 1
_WARNING = "W "
_END = _U32.pack(0)
#: Import threads of the child, and frames it holds at most (read ahead of the imports).
_THREADS = 4
_IN_FLIGHT = 64


class BackfillFrameError(ValueError):
    """A frame on the backfill pipe is malformed (truncated, bad kind, bad text)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Frame:
    """One entry to import, as the child receives it."""

    label: str
    document: bytes
    cleanup: Path | None
    blobs: dict[Digest, bytes | Path]


def encode_frame(
    *,
    label: str,
    document: bytes,
    blobs: Mapping[Digest, FetchedBlob],
    cleanup: Path | None,
) -> bytes:
    """One frame (length prefix included) for :func:`decode_frame` in the child."""
    label_bytes = label.encode()[:0xFFFF]
    cleanup_bytes = os.fsencode(cleanup) if cleanup is not None else b""
    parts: list[bytes] = [
        _U16.pack(len(label_bytes)),
        label_bytes,
        _U32.pack(len(document)),
        document,
        _U32.pack(len(cleanup_bytes)),
        cleanup_bytes,
        _U32.pack(len(blobs)),
    ]
    for digest, blob in blobs.items():
        if isinstance(blob, VerifiedBlob):
            kind, payload = _KIND_BYTES, blob.data
        else:
            kind, payload = _KIND_FILE, os.fsencode(blob)
        parts += [digest.raw, bytes((kind,)), _U32.pack(len(payload)), payload]
    body = b"".join(parts)
    return _U32.pack(len(body)) + body


class _Reader:
    """Bounds-checked reads from one frame body."""

    def __init__(self, body: bytes) -> None:
        self._view = memoryview(body)
        self._at = 0

    def take(self, size: int, what: str) -> bytes:
        end = self._at + size
        if end > len(self._view):
            raise BackfillFrameError(f"malformed backfill frame: truncated {what}")
        chunk = bytes(self._view[self._at : end])
        self._at = end
        return chunk

    def sized(self, prefix: struct.Struct, what: str) -> bytes:
        (size,) = prefix.unpack(self.take(prefix.size, f"{what} length"))
        return self.take(size, what)

    def done(self) -> None:
        if self._at != len(self._view):
            raise BackfillFrameError(
                f"malformed backfill frame: {len(self._view) - self._at} trailing byte(s)"
            )


def decode_frame(body: bytes) -> Frame:
    """The frame whose body (length prefix removed) is ``body``.

    Raises:
        BackfillFrameError: naming what is wrong.
    """
    reader = _Reader(body)
    try:
        label = reader.sized(_U16, "label").decode()
    except UnicodeDecodeError:
        raise BackfillFrameError("malformed backfill frame: the label is not UTF-8") from None
    document = reader.sized(_U32, "manifest")
    cleanup_bytes = reader.sized(_U32, "cleanup directory")
    (count,) = _U32.unpack(reader.take(_U32.size, "blob count"))
    blobs: dict[Digest, bytes | Path] = {}
    for _ in range(count):
        digest = Digest(reader.take(DIGEST_SIZE, "blob digest"))
        kind = reader.take(1, "blob kind")[0]
        payload = reader.sized(_U32, "blob")
        if kind == _KIND_BYTES:
            blobs[digest] = payload
        elif kind == _KIND_FILE:
            blobs[digest] = Path(os.fsdecode(payload))
        else:
            raise BackfillFrameError(f"malformed backfill frame: unknown blob kind {kind}")
    reader.done()
    cleanup = Path(os.fsdecode(cleanup_bytes)) if cleanup_bytes else None
    return Frame(label=label, document=document, cleanup=cleanup, blobs=blobs)


def read_frame(stream: BinaryIO) -> Frame | None:
    """The next frame of ``stream``; ``None`` at the end marker.

    Raises:
        BackfillFrameError: the stream ended early or a frame is malformed.
    """
    head = stream.read(_U32.size)
    if len(head) != _U32.size:
        raise BackfillFrameError("malformed backfill frame: the input ended without its end")
    (size,) = _U32.unpack(head)
    if size == 0:
        return None
    body = stream.read(size)
    if len(body) != size:
        raise BackfillFrameError("malformed backfill frame: truncated body")
    return decode_frame(body)


def import_frame(cache: LocalCache, frame: Frame) -> str | None:
    """Import one frame's entry into ``cache``; the warning if it was not imported."""
    options = cache.options
    try:
        try:
            manifest = parse_manifest(
                frame.document,
                chapter_revision=options.chapter_revision,
                hash_name=options.hash_name,
            )
        except ManifestError as error:
            return f"{frame.label}: the local cache refused the remote manifest: {error}"

        def fetch(digest: Digest, size: int) -> FetchedBlob:
            blob = frame.blobs.get(digest)
            if blob is None:
                raise OSError(f"blob {digest.hex[:12]} was not handed over")
            if isinstance(blob, Path):
                return blob
            # Verified by the parent; checked again here, across the process boundary.
            return verified_blob(blob, digest=digest, size=size, hash_name=options.hash_name)

        imported = cache.import_entry(manifest, fetch)
        return None if imported.ok else f"{frame.label}: {imported.warning}"
    finally:
        if frame.cleanup is not None:
            shutil.rmtree(frame.cleanup, ignore_errors=True)


class ProcessBackfill:
    """Imports remote hits into a local cache in a child process (RC-001).

    Started by :meth:`start` (or the first :meth:`submit`); frames go to the child through a
    queue and one writer thread, so a slow child never blocks the caller. :meth:`close` ends
    the input, waits for the child and returns the run's warnings.

    Args:
        options: How the child opens the local cache.
        log_dir: Where the child's output file goes (the run's spool directory).
    """

    def __init__(self, options: CacheOptions, *, log_dir: Path) -> None:
        self._options = options
        self._log = log_dir / "backfill.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._failed_start: str | None = None
        self._sent = 0
        self._lost = 0  # frames the child never got (it died)

    def start(self) -> None:
        """Start the child now (idempotent), e.g. while the remote lookups are under way."""
        if self._proc is not None or self._failed_start is not None:
            return
        options = self._options
        argv = [
            sys.executable,
            "-m",
            "hazremote.cache.backfill",
            str(options.root),
            "--hash",
            options.hash_name.value,
            "--revision",
            str(options.chapter_revision),
            "--level",
            str(options.compression_level),
            "--fsync",
            options.fsync.value,
        ]
        package_parent = str(Path(__file__).resolve().parents[2])
        path = os.environ.get("PYTHONPATH")
        env = {
            **os.environ,
            "PYTHONPATH": package_parent if not path else f"{package_parent}{os.pathsep}{path}",
        }
        try:
            with self._log.open("wb") as log:
                self._proc = subprocess.Popen(
                    argv, stdin=subprocess.PIPE, stdout=log, stderr=log, env=env
                )
        except OSError as error:
            self._failed_start = f"{type(error).__name__}: {error}"
            return
        self._writer = threading.Thread(target=self._pump, name="haz-backfill", daemon=True)
        self._writer.start()

    def submit(
        self,
        *,
        label: str,
        manifest: Manifest,
        blobs: Mapping[Digest, FetchedBlob],
        cleanup: Path | None,
        document: bytes | None = None,
    ) -> None:
        """Import ``manifest`` with its fetched ``blobs`` (``cleanup`` is removed after).

        ``document``, when given, is the manifest as received (the child parses it as
        strictly as the run did); otherwise the manifest is serialised here.
        """
        self.start()
        if self._proc is None:
            self._lost += 1
            if cleanup is not None:
                shutil.rmtree(cleanup, ignore_errors=True)
            return
        self._sent += 1
        if document is None:
            document = manifest.to_json()
        self._queue.put(encode_frame(label=label, document=document, blobs=blobs, cleanup=cleanup))

    def _pump(self) -> None:
        proc = self._proc
        assert proc is not None
        assert proc.stdin is not None
        fd = proc.stdin.fileno()
        broken = False
        while (frame := self._queue.get()) is not None:
            if broken:
                self._lost += 1
                continue
            try:
                write_all(fd, frame)
            except OSError:  # the child died: its exit status says why
                broken = True
                self._lost += 1
        if not broken:
            with contextlib.suppress(OSError):  # died after the last frame: close() says so
                write_all(fd, _END)
        proc.stdin.close()

    def close(self) -> list[str]:
        """End the input, wait for the child; the warnings of its imports and of its end."""
        if self._failed_start is not None:
            return [
                f"could not start the local-cache backfill ({self._failed_start}); "
                f"{self._lost} remote hit(s) were not added to the local cache"
            ]
        proc, writer = self._proc, self._writer
        if proc is None or writer is None:
            return []
        self._queue.put(None)
        writer.join()
        code = proc.wait()
        self._proc = None
        lines = self._log.read_text(errors="replace").splitlines()
        warnings = [line[len(_WARNING) :] for line in lines if line.startswith(_WARNING)]
        if code != 0:
            other = [line for line in lines if not line.startswith(_WARNING) and line.strip()]
            detail = f": {other[-1]}" if other else ""
            warnings.append(
                f"the local-cache backfill process failed (exit status {code}){detail}; "
                f"remote hits after its last import were not added to the local cache "
                f"({self._lost} of {self._sent} never reached it)"
            )
        return warnings


def main(argv: Sequence[str] | None = None) -> int:
    """The child: import every frame of stdin into the cache named by ``argv``."""
    # The run handles Ctrl-C (EXEC-012) and then closes our input: finish what was sent.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parser = argparse.ArgumentParser(prog="python -m hazremote.cache.backfill")
    parser.add_argument("root", type=Path)
    parser.add_argument("--hash", required=True, choices=[h.value for h in HashName])
    parser.add_argument("--revision", required=True, type=int)
    parser.add_argument("--level", required=True, type=int)
    parser.add_argument("--fsync", required=True, choices=[f.value for f in FsyncPolicy])
    args = parser.parse_args(argv)
    cache = LocalCache(
        args.root,
        hash_name=HashName(args.hash),
        chapter_revision=args.revision,
        compression_level=args.level,
        fsync=FsyncPolicy(args.fsync),
    )
    return serve(cache, sys.stdin.buffer, sys.stdout)


def serve(cache: LocalCache, frames: BinaryIO, out: TextIO) -> int:
    """Import every frame of ``frames`` into ``cache``, warnings as ``W`` lines on ``out``.

    Returns:
        0 at the end marker; 2 for a malformed frame or input that ended early (the frames
        before it are imported).
    """
    # Imports overlap on a few threads: on a disk whose metadata writes take a millisecond
    # each, one at a time would leave the run waiting for the last of them. A bounded
    # number in flight keeps the memory of queued blobs bounded too.
    slots = threading.BoundedSemaphore(_IN_FLIGHT)
    printing = threading.Lock()

    def warn(text: str) -> None:
        with printing:
            out.write(_WARNING + text.replace("\n", " ") + "\n")
            out.flush()

    def run(frame: Frame) -> None:
        try:
            warning = import_frame(cache, frame)
        except Exception as exc:  # a bug, not bad data: still one warning, never silence
            warning = f"{frame.label}: the backfill failed: {type(exc).__name__}: {exc}"
        finally:
            slots.release()
        if warning is not None:
            warn(warning)

    with ThreadPoolExecutor(max_workers=_THREADS, thread_name_prefix="haz-import") as pool:
        try:
            while (frame := read_frame(frames)) is not None:
                slots.acquire()
                pool.submit(run, frame)
        except BackfillFrameError as error:
            print(str(error), file=sys.stderr, flush=True)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
