"""Observing a run: the ``RunObserver`` port and the two renderers of task output.

The scheduler tells one observer everything that happens (tasks starting, their output chunks,
their records, the end of the run); :class:`ObserverGroup` fans that out to an output renderer
(:class:`LiveOutput` or :class:`BufferedOutput`) and a progress reporter
(:mod:`hazremote.execute.progress`). Renderers write raw bytes through an :class:`OutputSink`,
so tests capture them and the terminal progress area can keep itself out of their way.

Spec coverage:
* EXEC-016 — :class:`LiveOutput`: whole lines prefixed ``[project:task] ``, one write per chunk.
* EXEC-016 — :class:`LiveOutput`: a trailing partial line is flushed with a newline at task end.
* EXEC-016 — :class:`BufferedOutput`: at task end, stdout then stderr, two verbatim blocks.
* EXEC-017 — a cache hit replays its recorded bytes through the same calls, rendered alike.
* EXEC-040 — task output goes to stdout/stderr unchanged (binary-safe, invalid UTF-8 included).
Out of scope: progress and the epilogue (:mod:`.progress`), choosing the output mode (the CLI),
replaying cache entries (the lifecycle).
"""

from __future__ import annotations

import enum
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from hazremote.domain.model import OutputMode
from hazremote.domain.refs import TaskId
from hazremote.execute.records import RunSource, TaskRecord

__all__ = [
    "BufferedOutput",
    "LiveOutput",
    "NullObserver",
    "ObserverGroup",
    "OutputSink",
    "RunObserver",
    "Stream",
    "StreamFiles",
    "StreamSink",
    "output_renderer",
]

#: A live-mode line longer than this is broken into pieces of this size (memory bound).
MAX_LINE_BYTES = 1024 * 1024
#: Per task and stream, buffered mode keeps this much in memory before spilling to a temp file.
BUFFER_IN_MEMORY_BYTES = 1024 * 1024
_COPY_CHUNK = 1024 * 1024


class Stream(enum.Enum):
    STDOUT = "stdout"
    STDERR = "stderr"


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamFiles:
    """Files holding a task's complete streams (a spool or a cache entry's blobs)."""

    stdout: Path
    stderr: Path


class RunObserver(Protocol):
    """Port: what the scheduler reports while a run goes on. Called from the event loop only.

    ``task_finished`` is called once for every task of the run set, including tasks that never
    started (skipped, cancelled before admission); ``task_started`` only for tasks that begin
    producing a result, and again if the source changes (a miss that then runs).
    """

    def run_started(self, *, total: int) -> None:
        """The run begins with ``total`` tasks in the run set."""
        ...

    def task_started(self, task: TaskId, *, source: RunSource) -> None:
        """``task`` starts running (``fresh``/``remote-exec``) or restoring (a cache hit)."""
        ...

    def task_stdout(self, task: TaskId, chunk: bytes) -> None:
        """A chunk of the task's stdout, as it arrives (arbitrary boundaries)."""
        ...

    def task_stderr(self, task: TaskId, chunk: bytes) -> None:
        """A chunk of the task's stderr, as it arrives (arbitrary boundaries)."""
        ...

    def task_finished(self, record: TaskRecord, *, streams: StreamFiles | None = None) -> None:
        """The task's final record; ``streams``, when given, hold its complete output."""
        ...

    def run_finished(self, *, records: Sequence[TaskRecord], duration_s: float) -> None:
        """Every task has a record; ``duration_s`` is the run's wall time."""
        ...


class OutputSink(Protocol):
    """Where rendered bytes go: one call is one uninterrupted write."""

    def write(self, stream: Stream, data: bytes) -> None: ...


class StreamSink:
    """An :class:`OutputSink` over two binary streams, flushed after every write.

    Args:
        stdout: Defaults to ``sys.stdout.buffer`` (looked up when constructed).
        stderr: Defaults to ``sys.stderr.buffer``.
    """

    def __init__(self, *, stdout: IO[bytes] | None = None, stderr: IO[bytes] | None = None):
        self._streams = {
            Stream.STDOUT: stdout if stdout is not None else sys.stdout.buffer,
            Stream.STDERR: stderr if stderr is not None else sys.stderr.buffer,
        }

    def write(self, stream: Stream, data: bytes) -> None:
        target = self._streams[stream]
        target.write(data)
        target.flush()


class NullObserver:
    """Ignores everything; a base for observers that need only some of the calls."""

    def run_started(self, *, total: int) -> None:
        return None

    def task_started(self, task: TaskId, *, source: RunSource) -> None:
        return None

    def task_stdout(self, task: TaskId, chunk: bytes) -> None:
        return None

    def task_stderr(self, task: TaskId, chunk: bytes) -> None:
        return None

    def task_finished(self, record: TaskRecord, *, streams: StreamFiles | None = None) -> None:
        return None

    def run_finished(self, *, records: Sequence[TaskRecord], duration_s: float) -> None:
        return None


class ObserverGroup:
    """Forwards every call to each observer, in the given order."""

    def __init__(self, observers: Iterable[RunObserver]) -> None:
        self._observers = tuple(observers)

    def run_started(self, *, total: int) -> None:
        for observer in self._observers:
            observer.run_started(total=total)

    def task_started(self, task: TaskId, *, source: RunSource) -> None:
        for observer in self._observers:
            observer.task_started(task, source=source)

    def task_stdout(self, task: TaskId, chunk: bytes) -> None:
        for observer in self._observers:
            observer.task_stdout(task, chunk)

    def task_stderr(self, task: TaskId, chunk: bytes) -> None:
        for observer in self._observers:
            observer.task_stderr(task, chunk)

    def task_finished(self, record: TaskRecord, *, streams: StreamFiles | None = None) -> None:
        for observer in self._observers:
            observer.task_finished(record, streams=streams)

    def run_finished(self, *, records: Sequence[TaskRecord], duration_s: float) -> None:
        for observer in self._observers:
            observer.run_finished(records=records, duration_s=duration_s)


class _LineSplitter:
    """Turns chunks into whole prefixed lines; the result never depends on chunk boundaries.

    A line (without its newline) longer than ``max_line`` is emitted in ``max_line``-byte
    pieces, each followed by a newline: a break happens exactly when a byte other than a
    newline arrives while ``max_line`` bytes are pending, so any chunking of the same bytes
    renders identically and at most ``max_line`` bytes are held.
    """

    def __init__(self, prefix: bytes, max_line: int) -> None:
        self.prefix = prefix
        self.max_line = max_line
        self.pending = b""

    def feed(self, data: bytes) -> bytes:
        out: list[bytes] = []
        start = 0
        while start < len(data):
            newline = data.find(b"\n", start)
            end = len(data) if newline < 0 else newline
            segment = data[start:end]
            # Pieces forced out by length: while more than max_line bytes would be pending.
            room = self.max_line - len(self.pending)
            while len(segment) > room:
                out.append(self.prefix + self.pending + segment[:room] + b"\n")
                self.pending, segment, room = b"", segment[room:], self.max_line
            if newline < 0:
                self.pending += segment
                break
            out.append(self.prefix + self.pending + segment + b"\n")
            self.pending = b""
            start = newline + 1
        return b"".join(out)

    def finish(self) -> bytes:
        if not self.pending:
            return b""
        line, self.pending = self.prefix + self.pending + b"\n", b""
        return line


class LiveOutput(NullObserver):
    """EXEC-016 ``live``: whole lines, prefixed ``[project:task] ``, as they complete.

    Args:
        sink: Where lines go; stdout lines to ``Stream.STDOUT``, stderr lines to
            ``Stream.STDERR``.
        max_line: Longest line held before it is broken (see :class:`_LineSplitter`).
    """

    def __init__(self, *, sink: OutputSink, max_line: int = MAX_LINE_BYTES) -> None:
        self._sink = sink
        self._max_line = max_line
        self._splitters: dict[tuple[TaskId, Stream], _LineSplitter] = {}

    def _feed(self, task: TaskId, stream: Stream, chunk: bytes) -> None:
        splitter = self._splitters.get((task, stream))
        if splitter is None:
            prefix = f"[{task}] ".encode()
            splitter = self._splitters[task, stream] = _LineSplitter(prefix, self._max_line)
        lines = splitter.feed(chunk)
        if lines:
            self._sink.write(stream, lines)

    def task_stdout(self, task: TaskId, chunk: bytes) -> None:
        self._feed(task, Stream.STDOUT, chunk)

    def task_stderr(self, task: TaskId, chunk: bytes) -> None:
        self._feed(task, Stream.STDERR, chunk)

    def task_finished(self, record: TaskRecord, *, streams: StreamFiles | None = None) -> None:
        for stream in (Stream.STDOUT, Stream.STDERR):
            splitter = self._splitters.pop((record.task, stream), None)
            if splitter is not None and (rest := splitter.finish()):
                self._sink.write(stream, rest)


class _TaskBuffer:
    """One task's two streams: in memory while small, in an anonymous temp file beyond."""

    def __init__(self, memory_limit: int) -> None:
        self.files = {
            stream: tempfile.SpooledTemporaryFile(max_size=memory_limit)  # noqa: SIM115
            for stream in Stream
        }

    def chunks(self, stream: Stream) -> Iterable[bytes]:
        file = self.files[stream]
        file.seek(0)
        while chunk := file.read(_COPY_CHUNK):
            yield chunk

    def close(self) -> None:
        for file in self.files.values():
            file.close()


def _file_chunks(path: Path) -> Iterable[bytes]:
    with path.open("rb") as file:
        while chunk := file.read(_COPY_CHUNK):
            yield chunk


class BufferedOutput(NullObserver):
    """EXEC-016 ``buffered``: at task end, its stdout block, then its stderr block, verbatim.

    Output is collected from the chunk calls (memory up to ``memory_limit`` per task and
    stream, then a temp file). When ``task_finished`` brings :class:`StreamFiles`, the blocks
    are copied from those files instead, which holds nothing in memory however large.

    Args:
        sink: Where the blocks go.
        memory_limit: Bytes per task and stream kept in memory before spilling to disk.
    """

    def __init__(self, *, sink: OutputSink, memory_limit: int = BUFFER_IN_MEMORY_BYTES) -> None:
        self._sink = sink
        self._memory_limit = memory_limit
        self._buffers: dict[TaskId, _TaskBuffer] = {}

    def _buffer(self, task: TaskId) -> _TaskBuffer:
        buffer = self._buffers.get(task)
        if buffer is None:
            buffer = self._buffers[task] = _TaskBuffer(self._memory_limit)
        return buffer

    def task_stdout(self, task: TaskId, chunk: bytes) -> None:
        self._buffer(task).files[Stream.STDOUT].write(chunk)

    def task_stderr(self, task: TaskId, chunk: bytes) -> None:
        self._buffer(task).files[Stream.STDERR].write(chunk)

    def task_finished(self, record: TaskRecord, *, streams: StreamFiles | None = None) -> None:
        buffer = self._buffers.pop(record.task, None)
        try:
            for stream in (Stream.STDOUT, Stream.STDERR):
                if streams is not None:
                    path = streams.stdout if stream is Stream.STDOUT else streams.stderr
                    chunks = _file_chunks(path)
                elif buffer is not None:
                    chunks = buffer.chunks(stream)
                else:
                    continue
                for chunk in chunks:
                    self._sink.write(stream, chunk)
        finally:
            if buffer is not None:
                buffer.close()


def output_renderer(mode: OutputMode, *, sink: OutputSink) -> RunObserver:
    """The renderer for ``output.mode`` / ``--output`` (EXEC-016)."""
    if mode is OutputMode.BUFFERED:
        return BufferedOutput(sink=sink)
    return LiveOutput(sink=sink)
