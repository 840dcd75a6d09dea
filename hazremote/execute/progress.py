"""Progress on stderr: a line per finished task, a live status area on a terminal, the epilogue.

Spec coverage:
* EXEC-040 — haz's own output goes to stderr; :class:`PlainProgress`: a line per finished task.
* EXEC-040 — :func:`format_task_line`: ``✓ project:task 1.2s``, ``◉ … (cached)``, ``↓``, ``✗``….
* EXEC-040 — :class:`TtyProgress`: the same lines above a status area (running, done, hits).
* EXEC-040 — :func:`epilogue_lines`: ``Tasks: …`` with zero parts omitted, then ``Time: 4.2s``.
* EXEC-011 — :func:`skip_causes`: the skipped count names each skip cause and its root tasks.
* EXEC-040 — :meth:`ConsoleObserver.notice`: haz's notices in a run, above the status area.
* EXEC-040 — colour only on a terminal and never with ``NO_COLOR`` (:func:`color_enabled`).
Out of scope: task output (:mod:`.observers`), the summary JSON (:mod:`.records`), structlog
diagnostics (the CLI).
"""

from __future__ import annotations

import io
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from hazremote.domain.model import OutputMode
from hazremote.domain.refs import TaskId
from hazremote.domain.units import format_duration
from hazremote.execute.observers import (
    NullObserver,
    ObserverGroup,
    OutputSink,
    RunObserver,
    Stream,
    StreamFiles,
    StreamSink,
    output_renderer,
)
from hazremote.execute.records import (
    CancelledRecord,
    RunSource,
    RunState,
    SkipCause,
    SkipRecord,
    TaskRecord,
)

if TYPE_CHECKING:
    from rich.text import Text

__all__ = [
    "ConsoleObserver",
    "PlainProgress",
    "TtyProgress",
    "color_enabled",
    "console_observer",
    "epilogue_lines",
    "format_task_line",
    "skip_causes",
]

#: How many root tasks the epilogue names per skip cause before it says "+N more".
_NAMED_UPSTREAMS = 3

_SOURCE_LABELS = {
    RunSource.LOCAL_CACHE: ("◉", "cyan", "cached"),
    RunSource.REMOTE_CACHE: ("↓", "cyan", "remote cache"),
    RunSource.REMOTE_EXEC: ("⇡", "blue", "remote exec"),
}


def color_enabled(*, is_tty: bool, environ: Mapping[str, str]) -> bool:
    """EXEC-040: colour on a terminal unless ``NO_COLOR`` is set (to anything but empty)."""
    return is_tty and not environ.get("NO_COLOR")


def _failure_detail(record: TaskRecord) -> str:
    error = getattr(record, "error", None)
    if error:
        return str(error)
    number = getattr(record, "signal", None)
    if number is not None:
        try:
            return f"signal {signal.Signals(number).name}"
        except ValueError:
            return f"signal {number}"
    return f"exit {getattr(record, 'exit_code', None)}"


def _describe(record: TaskRecord) -> tuple[str, str, str]:
    """(symbol, rich style, detail) of a finished task's line."""
    if isinstance(record, SkipRecord):
        return "-", "yellow", "(skipped)"
    if isinstance(record, CancelledRecord):
        return "!", "yellow", "(cancelled)"
    if record.state is RunState.SUCCEEDED:
        if record.source in _SOURCE_LABELS:
            symbol, style, label = _SOURCE_LABELS[record.source]
            if record.worker is not None:  # RX: ``(remote exec on w1)``
                label = f"{label} on {record.worker}"
            return symbol, style, f"({label})"
        return "✓", "green", format_duration(record.duration_ms / 1000)
    return "✗", "red", f"({_failure_detail(record)})"


def format_task_line(record: TaskRecord) -> str:
    """The plain line for a finished task (EXEC-040), without a newline."""
    symbol, _, detail = _describe(record)
    return f"{symbol} {record.task} {detail}"


def skip_causes(skipped: Iterable[SkipRecord]) -> str:
    """``2 upstream-failed: lib:build; 1 output-overlap: lib:pack`` — each cause (in the
    order of :class:`SkipCause`) with its count and root tasks (canonical order)."""
    counts: dict[SkipCause, int] = {}
    roots: dict[SkipCause, set[TaskId]] = {}
    for record in skipped:
        counts[record.cause] = counts.get(record.cause, 0) + 1
        if record.upstream is not None:
            roots.setdefault(record.cause, set()).add(record.upstream)
    parts = []
    for cause in SkipCause:
        if cause not in counts:
            continue
        part = f"{counts[cause]} {cause.value}"
        named = sorted(roots.get(cause, ()))
        if named:
            more = len(named) - _NAMED_UPSTREAMS
            part += ": " + ", ".join(str(t) for t in named[:_NAMED_UPSTREAMS])
            part += f" +{more} more" if more > 0 else ""
        parts.append(part)
    return "; ".join(parts)


def epilogue_lines(records: Iterable[TaskRecord], duration_s: float) -> tuple[str, str]:
    """``Tasks: …`` and ``Time: …`` (EXEC-040); zero counts are left out.

    An empty run (nothing counted at all) reads ``Tasks: 0 succeeded``.
    """
    succeeded = failed = cancelled = 0
    skipped: list[SkipRecord] = []
    by_source = dict.fromkeys(_SOURCE_LABELS, 0)
    for record in records:
        if isinstance(record, SkipRecord):
            skipped.append(record)
        elif isinstance(record, CancelledRecord):
            cancelled += 1
        elif record.state is RunState.SUCCEEDED:
            succeeded += 1
            if record.source in by_source:
                by_source[record.source] += 1
        else:
            failed += 1
    hits = [f"{n} {_SOURCE_LABELS[source][2]}" for source, n in by_source.items() if n]
    parts = []
    if succeeded:
        parts.append(f"{succeeded} succeeded" + (f" ({', '.join(hits)})" if hits else ""))
    if failed:
        parts.append(f"{failed} failed")
    if skipped:
        parts.append(f"{len(skipped)} skipped ({skip_causes(skipped)})")
    if cancelled:
        parts.append(f"{cancelled} cancelled")
    return f"Tasks: {', '.join(parts) or '0 succeeded'}", f"Time: {format_duration(duration_s)}"


class PlainProgress(NullObserver):
    """EXEC-040 without a terminal: a plain line per finished task, then the epilogue.

    Args:
        sink: Lines go to its ``Stream.STDERR``.
        epilogue: Whether :meth:`run_finished` prints the epilogue.
    """

    def __init__(self, *, sink: OutputSink, epilogue: bool = True) -> None:
        self._sink = sink
        self._epilogue = epilogue

    @property
    def sink(self) -> OutputSink:
        """The sink task output should go through (the same one: nothing to coordinate)."""
        return self._sink

    def task_finished(self, record: TaskRecord, *, streams: StreamFiles | None = None) -> None:
        self._sink.write(Stream.STDERR, (format_task_line(record) + "\n").encode())

    def run_finished(self, *, records: Sequence[TaskRecord], duration_s: float) -> None:
        if self._epilogue:
            text = "\n".join(epilogue_lines(records, duration_s)) + "\n"
            self._sink.write(Stream.STDERR, text.encode())


def _stderr_width() -> int:
    try:
        return os.get_terminal_size(2).columns
    except OSError:
        return 80


class _TerminalSink:
    """Task output and progress lines written *above* the status area (erase, write, redraw)."""

    def __init__(self, owner: TtyProgress) -> None:
        self._owner = owner

    def write(self, stream: Stream, data: bytes) -> None:
        self._owner.write_above(stream, data)


class TtyProgress(NullObserver):
    """EXEC-040 on a terminal: finished-task lines plus a status area redrawn under them.

    The status area lists running tasks with their elapsed time and a ``done/total`` line with
    the cache hits so far. Everything written to the terminal meanwhile — task output too —
    must go through :attr:`sink`, which erases the area, writes, and redraws it, so the area
    never tears a line. A background thread refreshes the elapsed times. ``rich`` is imported
    only when one is built (start-up time matters).

    Args:
        sink: The real stdout/stderr; the area is drawn on ``Stream.STDERR``.
        color: Colour the symbols (the caller applies :func:`color_enabled`).
        width: Terminal width, asked at every redraw (defaults to stderr's size).
        max_rows: Height limit of the area (running tasks beyond it are counted).
        clock: Monotonic clock, for elapsed times.
        refresh_s: Minimum time between redraws; also the refresh thread's period.
        refresh_thread: Start the refresh thread at :meth:`run_started`.
        epilogue: Whether :meth:`run_finished` prints the epilogue.
    """

    def __init__(
        self,
        *,
        sink: OutputSink,
        color: bool,
        width: Callable[[], int] = _stderr_width,
        max_rows: int = 10,
        clock: Callable[[], float] = time.monotonic,
        refresh_s: float = 0.1,
        refresh_thread: bool = True,
        epilogue: bool = True,
    ) -> None:
        from rich.console import Console

        self._raw = sink
        self._width = width
        self._max_rows = max(2, max_rows)
        self._clock = clock
        self._refresh_s = refresh_s
        self._use_thread = refresh_thread
        self._epilogue = epilogue
        self._console = Console(
            file=io.StringIO(),
            force_terminal=True,
            color_system="standard" if color else None,
            no_color=not color,
            width=80,
            highlight=False,
            markup=False,
            emoji=False,
        )
        self._lock = threading.RLock()
        self._running: dict[TaskId, tuple[RunSource, float]] = {}
        self._total = 0
        self._done = 0
        self._hits = 0
        self._drawn = 0  # lines of the area currently on screen
        self._last_draw = float("-inf")
        self._at_line_start = True
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._terminal_sink = _TerminalSink(self)

    @property
    def sink(self) -> OutputSink:
        """The sink every other terminal write must go through while the area is shown."""
        return self._terminal_sink

    # -- drawing (callers hold the lock) ------------------------------------------------------
    def _render(self, texts: Iterable[Text]) -> bytes:
        self._console.width = max(20, self._width() - 1)
        with self._console.capture() as capture:
            for text in texts:
                self._console.print(text, no_wrap=True, overflow="ellipsis", crop=True)
        return capture.get().encode()

    def _area(self) -> list[Text]:
        from rich.text import Text

        now = self._clock()
        running = sorted(self._running.items(), key=lambda item: (item[1][1], item[0]))
        shown = running if len(running) < self._max_rows else running[: self._max_rows - 2]
        lines = []
        for task, (source, since) in shown:
            line = Text("  ")
            line.append(str(task), style="bold")
            line.append(f" {format_duration(now - since)}", style="dim")
            if source in _SOURCE_LABELS:
                line.append(f" ({_SOURCE_LABELS[source][2]})", style="dim")
            lines.append(line)
        if len(shown) < len(running):
            lines.append(Text(f"  … and {len(running) - len(shown)} more", style="dim"))
        hits = f"{self._hits} cache hit{'s' if self._hits != 1 else ''}"
        lines.append(Text(f"{self._done}/{self._total} done · {hits} · {len(running)} running"))
        return lines

    def _erase(self) -> None:
        if self._drawn:
            self._raw.write(Stream.STDERR, f"\r\x1b[{self._drawn}A\x1b[J".encode())
            self._drawn = 0

    def _draw(self) -> None:
        if not self._at_line_start or self._stop.is_set():
            return  # drawing now would break the unfinished line above
        area = self._area()
        self._erase()
        self._raw.write(Stream.STDERR, self._render(area))
        self._drawn = len(area)
        self._last_draw = self._clock()

    def write_above(self, stream: Stream, data: bytes) -> None:
        """Write ``data`` to ``stream`` above the area (the :attr:`sink` implementation)."""
        if not data:
            return
        with self._lock:
            self._erase()
            self._raw.write(stream, data)
            self._at_line_start = data.endswith(b"\n")
            if self._clock() - self._last_draw >= self._refresh_s:
                self._draw()

    def refresh(self) -> None:
        """Redraw the area now (elapsed times); the refresh thread calls this."""
        with self._lock:
            self._draw()

    def _tick(self) -> None:
        while not self._stop.wait(self._refresh_s):
            self.refresh()

    # -- observer calls -----------------------------------------------------------------------
    def run_started(self, *, total: int) -> None:
        with self._lock:
            self._total = total
            self._draw()
        if self._use_thread and self._thread is None:
            self._thread = threading.Thread(target=self._tick, name="haz-progress", daemon=True)
            self._thread.start()

    def task_started(self, task: TaskId, *, source: RunSource) -> None:
        with self._lock:
            self._running[task] = (source, self._running.get(task, (source, self._clock()))[1])
            self._draw()

    def task_finished(self, record: TaskRecord, *, streams: StreamFiles | None = None) -> None:
        from rich.text import Text

        symbol, style, detail = _describe(record)
        line = Text()
        line.append(symbol, style=style)
        line.append(f" {record.task} ")
        line.append(detail, style="dim" if style == "green" else style)
        with self._lock:
            self._running.pop(record.task, None)
            self._done += 1
            if record.state is RunState.SUCCEEDED and getattr(record, "source", None) in (
                RunSource.LOCAL_CACHE,
                RunSource.REMOTE_CACHE,
            ):
                self._hits += 1
            # A finished line is never cut short: it is rendered wide enough to fit.
            width = self._console.width
            self._console.width = max(width, len(line.plain) + 1)
            with self._console.capture() as capture:
                self._console.print(line, no_wrap=True, crop=False)
            self._console.width = width
            self._erase()
            if not self._at_line_start:
                self._raw.write(Stream.STDERR, b"\n")
            self._raw.write(Stream.STDERR, capture.get().encode())
            self._at_line_start = True
            self._draw()

    def run_finished(self, *, records: Sequence[TaskRecord], duration_s: float) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._lock:
            self._erase()
            if self._epilogue:
                text = "\n".join(epilogue_lines(records, duration_s)) + "\n"
                if not self._at_line_start:
                    text = "\n" + text
                self._raw.write(Stream.STDERR, text.encode())
                self._at_line_start = True


class ConsoleObserver(ObserverGroup):
    """The observers of ``haz run``, and where its own notices go (stderr, above the
    status area on a terminal)."""

    def __init__(self, observers: Iterable[RunObserver], *, notices: OutputSink) -> None:
        super().__init__(observers)
        self._notices = notices

    def notice(self, text: str) -> None:
        """Print one line of haz's own on stderr now (call on the event loop thread)."""
        self._notices.write(Stream.STDERR, (text.rstrip("\n") + "\n").encode())


def console_observer(
    *,
    mode: OutputMode,
    interactive: bool,
    color: bool,
    sink: OutputSink | None = None,
) -> ConsoleObserver:
    """The standard observer of ``haz run``: an output renderer, then the progress reporter.

    Args:
        mode: ``live`` or ``buffered`` (EXEC-016).
        interactive: stderr is a terminal: show the status area (:class:`TtyProgress`).
        color: Colour the progress (see :func:`color_enabled`).
        sink: The real streams (defaults to :class:`StreamSink` over stdout/stderr).
    """
    raw = sink if sink is not None else StreamSink()
    progress: TtyProgress | PlainProgress = (
        TtyProgress(sink=raw, color=color) if interactive else PlainProgress(sink=raw)
    )
    # The renderer comes first so that a task's buffered blocks precede its progress line.
    return ConsoleObserver(
        [output_renderer(mode, sink=progress.sink), progress], notices=progress.sink
    )
