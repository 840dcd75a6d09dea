"""Progress lines, the epilogue and the terminal status area (EXEC-040)."""

from __future__ import annotations

import re
import signal

import pytest

from hazremote.domain.model import OutputMode
from hazremote.domain.refs import TaskId
from hazremote.execute.observers import Stream
from hazremote.execute.progress import (
    PlainProgress,
    TtyProgress,
    color_enabled,
    console_observer,
    epilogue_lines,
    format_task_line,
)
from hazremote.execute.records import (
    CancelledRecord,
    CompletedRecord,
    RunSource,
    RunState,
    SkipCause,
    SkipRecord,
    TaskRecord,
)

from .conftest import Recorder

T = TaskId("app", "build")
SGR = re.compile(rb"\x1b\[[0-9;]*m")  # a colour/style escape sequence


def ok(source: RunSource = RunSource.FRESH, ms: int = 1234, task: TaskId = T) -> CompletedRecord:
    return CompletedRecord(
        task=task, state=RunState.SUCCEEDED, source=source, key=None, duration_ms=ms
    )


def failed(**fields: object) -> CompletedRecord:
    return CompletedRecord(
        task=T,
        state=RunState.FAILED,
        source=fields.pop("source", RunSource.FRESH),  # type: ignore[arg-type]
        key=None,
        duration_ms=10,
        **fields,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("record", "line"),
    [
        (ok(), "✓ app:build 1.2s"),
        (ok(ms=75_000), "✓ app:build 1m15s"),
        (ok(RunSource.LOCAL_CACHE, ms=3), "◉ app:build (cached)"),
        (ok(RunSource.REMOTE_CACHE), "↓ app:build (remote cache)"),
        (ok(RunSource.REMOTE_EXEC), "⇡ app:build (remote exec)"),
        (failed(exit_code=2), "✗ app:build (exit 2)"),
        (failed(signal=int(signal.SIGKILL)), "✗ app:build (signal SIGKILL)"),
        (failed(signal=200), "✗ app:build (signal 200)"),
        (
            failed(source=None, error="command not found: frobnicate"),
            "✗ app:build (command not found: frobnicate)",
        ),
        (
            failed(signal=int(signal.SIGTERM), error="timed out after 10.0s"),
            "✗ app:build (timed out after 10.0s)",
        ),
        (
            SkipRecord(task=T, cause=SkipCause.UPSTREAM_FAILED, upstream=None),
            "- app:build (skipped)",
        ),
        (CancelledRecord(task=T), "! app:build (cancelled)"),
    ],
)
def test_task_line(record: TaskRecord, line: str) -> None:
    """EXEC-040: one plain line per finished task, by state and source."""
    assert format_task_line(record) == line


def _records(
    *,
    fresh: int = 0,
    cached: int = 0,
    remote: int = 0,
    rexec: int = 0,
    fail: int = 0,
    skip: int = 0,
    cancel: int = 0,
) -> list[TaskRecord]:
    records: list[TaskRecord] = []
    records += [ok(RunSource.FRESH) for _ in range(fresh)]
    records += [ok(RunSource.LOCAL_CACHE) for _ in range(cached)]
    records += [ok(RunSource.REMOTE_CACHE) for _ in range(remote)]
    records += [ok(RunSource.REMOTE_EXEC) for _ in range(rexec)]
    records += [failed(exit_code=1) for _ in range(fail)]
    records += [
        SkipRecord(task=T, cause=SkipCause.UPSTREAM_FAILED, upstream=None) for _ in range(skip)
    ]
    records += [CancelledRecord(task=T) for _ in range(cancel)]
    return records


@pytest.mark.parametrize(
    ("records", "tasks"),
    [
        (_records(fresh=3), "Tasks: 3 succeeded"),
        (
            _records(fresh=1, cached=2, remote=3, rexec=4, fail=5, skip=6, cancel=7),
            "Tasks: 10 succeeded (2 cached, 3 remote cache, 4 remote exec), 5 failed, "
            "6 skipped (6 upstream-failed), 7 cancelled",
        ),
        (_records(cached=2), "Tasks: 2 succeeded (2 cached)"),
        (_records(fresh=1, remote=1), "Tasks: 2 succeeded (1 remote cache)"),
        (_records(fresh=1, rexec=1, fail=1), "Tasks: 2 succeeded (1 remote exec), 1 failed"),
        (_records(fail=1, skip=2), "Tasks: 1 failed, 2 skipped (2 upstream-failed)"),
        (_records(cancel=3), "Tasks: 3 cancelled"),
        ([], "Tasks: 0 succeeded"),
    ],
)
def test_epilogue(records: list[TaskRecord], tasks: str) -> None:
    """EXEC-040: zero parts are omitted, and so is an all-zero parenthesis."""
    assert epilogue_lines(records, 4.2) == (tasks, "Time: 4.2s")


def test_epilogue_names_each_skip_cause_and_its_root_tasks() -> None:
    """Issue 12 (every non-zero exit says why), EXEC-041 kinds: causes in SkipCause order,
    root tasks in canonical order, at most three named."""

    def skip(cause: SkipCause, upstream: str | None) -> SkipRecord:
        root = TaskId(*upstream.split(":")) if upstream else None
        return SkipRecord(task=T, cause=cause, upstream=root)

    records: list[TaskRecord] = [
        skip(SkipCause.OUTPUT_OVERLAP, "lib:pack"),
        skip(SkipCause.UPSTREAM_FAILED, "lib:build"),
        skip(SkipCause.UPSTREAM_FAILED, "lib:build"),
        *(skip(SkipCause.UPSTREAM_ERRORED, f"p{i}:t") for i in (5, 1, 4, 2, 3)),
    ]
    assert epilogue_lines(records, 1.0)[0] == (
        "Tasks: 8 skipped (2 upstream-failed: lib:build; "
        "5 upstream-errored: p1:t, p2:t, p3:t +2 more; 1 output-overlap: lib:pack)"
    )


@pytest.mark.parametrize(
    ("is_tty", "environ", "expected"),
    [
        (True, {}, True),
        (True, {"NO_COLOR": "1"}, False),
        (True, {"NO_COLOR": ""}, True),  # no-color.org: only a non-empty value counts
        (False, {}, False),
        (False, {"NO_COLOR": "1"}, False),
    ],
)
def test_color_decision(is_tty: bool, environ: dict[str, str], expected: bool) -> None:
    """EXEC-040: NO_COLOR and a non-terminal both disable colour."""
    assert color_enabled(is_tty=is_tty, environ=environ) is expected


def test_plain_progress_writes_lines_and_epilogue_to_stderr_only() -> None:
    """EXEC-040: progress and epilogue go to stderr, so stdout carries task output only."""
    sink = Recorder()
    progress = PlainProgress(sink=sink)
    records = [ok(), ok(RunSource.LOCAL_CACHE), failed(exit_code=2)]
    progress.run_started(total=3)
    for record in records:
        progress.task_started(record.task, source=RunSource.FRESH)
        progress.task_finished(record)
    progress.run_finished(records=records, duration_s=4.25)
    assert sink.joined(Stream.STDOUT) == b""
    assert sink.joined(Stream.STDERR).decode() == (
        "✓ app:build 1.2s\n"
        "◉ app:build (cached)\n"
        "✗ app:build (exit 2)\n"
        "Tasks: 2 succeeded (1 cached), 1 failed\n"
        "Time: 4.2s\n"
    )
    assert not SGR.search(sink.joined(Stream.STDERR))


class Screen:
    """Just enough of a terminal to replay what the status area writes."""

    def __init__(self) -> None:
        self.lines: list[str] = [""]
        self.row = 0
        self.col = 0

    def feed(self, data: bytes) -> None:
        text = SGR.sub(b"", data).decode()
        pos = 0
        while pos < len(text):
            if match := re.match(r"\x1b\[(\d*)([AJ])", text[pos:]):
                if match.group(2) == "A":
                    self.row = max(0, self.row - int(match.group(1) or 1))
                else:  # J: clear from the cursor to the end of the screen
                    self.lines[self.row] = self.lines[self.row][: self.col]
                    del self.lines[self.row + 1 :]
                pos += match.end()
                continue
            char = text[pos]
            pos += 1
            if char == "\r":
                self.col = 0
            elif char == "\n":
                self.row += 1
                self.col = 0
                if self.row == len(self.lines):
                    self.lines.append("")
            else:
                line = self.lines[self.row].ljust(self.col)
                self.lines[self.row] = line[: self.col] + char + line[self.col + 1 :]
                self.col += 1

    def visible(self) -> list[str]:
        lines = list(self.lines)
        while lines and not lines[-1]:
            lines.pop()
        return lines


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _tty(color: bool, width: int = 60) -> tuple[TtyProgress, Recorder, Clock]:
    sink, clock = Recorder(), Clock()
    progress = TtyProgress(
        sink=sink,
        color=color,
        width=lambda: width,
        clock=clock,
        refresh_s=0.0,
        refresh_thread=False,
    )
    return progress, sink, clock


def test_tty_status_area_shows_running_tasks_done_total_and_hits() -> None:
    """EXEC-040: on a terminal, running tasks with elapsed time, done/total, cache hits."""
    progress, sink, clock = _tty(color=False)
    screen = Screen()
    progress.run_started(total=3)
    progress.task_started(TaskId("core", "build"), source=RunSource.LOCAL_CACHE)
    progress.task_finished(ok(RunSource.LOCAL_CACHE, task=TaskId("core", "build")))
    progress.task_started(T, source=RunSource.FRESH)
    clock.now += 3.25
    progress.refresh()
    for _, data in sink.writes:
        screen.feed(data)
    assert screen.visible() == [
        "◉ core:build (cached)",
        "  app:build 3.2s",
        "1/3 done · 1 cache hit · 1 running",
    ]


def test_tty_area_never_tears_task_output_and_is_gone_at_the_end() -> None:
    """EXEC-040: output goes above the area; at the end only lines and the epilogue remain."""
    progress, sink, clock = _tty(color=False)
    screen = Screen()
    progress.run_started(total=2)
    progress.task_started(T, source=RunSource.FRESH)
    progress.sink.write(Stream.STDOUT, b"[app:build] line one\n")
    progress.sink.write(Stream.STDERR, b"[app:build] warning\n")
    clock.now += 1.0
    progress.refresh()
    progress.task_finished(ok(ms=1000))
    progress.task_finished(
        SkipRecord(task=TaskId("app", "test"), cause=SkipCause.UPSTREAM_FAILED, upstream=None)
    )
    progress.run_finished(records=[ok(ms=1000)], duration_s=1.5)
    for _, data in sink.writes:  # one terminal shows both streams, in write order
        screen.feed(data)
    assert screen.visible() == [
        "[app:build] line one",
        "[app:build] warning",
        "✓ app:build 1.0s",
        "- app:test (skipped)",
        "Tasks: 1 succeeded",
        "Time: 1.5s",
    ]
    # Task output itself reaches its stream unchanged.
    assert sink.joined(Stream.STDOUT) == b"[app:build] line one\n"


def test_tty_truncates_area_lines_to_the_terminal_width() -> None:
    """A status line wider than the terminal would wrap and break the redraw: it is cut."""
    progress, sink, _ = _tty(color=False, width=30)
    screen = Screen()
    progress.run_started(total=1)
    progress.task_started(
        TaskId("a-very-long-project-name", "and-a-long-task"), source=RunSource.FRESH
    )
    for _, data in sink.writes:
        screen.feed(data)
    assert all(len(line) < 30 for line in screen.visible())
    assert screen.visible()[0].endswith("…")


def test_tty_colour_only_when_enabled() -> None:
    """EXEC-040: colour codes appear with color=True and never with color=False (NO_COLOR)."""
    outputs = {}
    for color in (True, False):
        progress, sink, _ = _tty(color=color)
        progress.run_started(total=2)
        progress.task_started(T, source=RunSource.FRESH)
        progress.task_finished(ok())
        progress.task_finished(failed(exit_code=1))
        progress.run_finished(records=[ok(), failed(exit_code=1)], duration_s=1.0)
        outputs[color] = sink.joined(Stream.STDERR)
    assert SGR.search(outputs[True])
    assert not SGR.search(outputs[False])


def test_tty_refresh_thread_stops_at_run_end() -> None:
    """The refresh thread is started by run_started and joined by run_finished."""
    sink = Recorder()
    progress = TtyProgress(sink=sink, color=False, width=lambda: 60, refresh_s=0.01)
    progress.run_started(total=1)
    progress.task_started(T, source=RunSource.FRESH)
    progress.task_finished(ok())
    progress.run_finished(records=[ok()], duration_s=0.1)
    written = len(sink.writes)
    assert progress._thread is None
    progress.refresh()  # after the end nothing is drawn any more
    assert len(sink.writes) == written


@pytest.mark.parametrize("mode", [OutputMode.LIVE, OutputMode.BUFFERED])
def test_console_observer_puts_output_before_the_progress_line(mode: OutputMode) -> None:
    """EXEC-016/040: a task's output precedes its ✓ line; stdout holds task output only."""
    sink = Recorder()
    observer = console_observer(mode=mode, interactive=False, color=False, sink=sink)
    observer.run_started(total=1)
    observer.task_started(T, source=RunSource.FRESH)
    observer.task_stdout(T, b"out\n")
    observer.task_stderr(T, b"err\n")
    observer.task_finished(ok())
    observer.run_finished(records=[ok()], duration_s=1.2)
    prefix = b"[app:build] " if mode is OutputMode.LIVE else b""
    assert sink.joined(Stream.STDOUT) == prefix + b"out\n"
    assert sink.joined(Stream.STDERR) == (
        prefix + b"err\n" + "✓ app:build 1.2s\nTasks: 1 succeeded\nTime: 1.2s\n".encode()
    )
