"""Task output renderers (EXEC-016, EXEC-017, EXEC-040)."""

from __future__ import annotations

import io
import itertools
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hazremote.domain.model import OutputMode
from hazremote.domain.refs import TaskId
from hazremote.execute.observers import (
    BufferedOutput,
    LiveOutput,
    ObserverGroup,
    Stream,
    StreamFiles,
    StreamSink,
    output_renderer,
)
from hazremote.execute.records import (
    CompletedRecord,
    RunSource,
    RunState,
    SkipCause,
    SkipRecord,
    TaskRecord,
)

from .conftest import Recorder

A = TaskId("app", "build")
B = TaskId("core", "test")


def done(task: TaskId) -> CompletedRecord:
    return CompletedRecord(
        task=task, state=RunState.SUCCEEDED, source=RunSource.FRESH, key=None, duration_ms=5
    )


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def reference_live(prefix: bytes, data: bytes, max_line: int) -> bytes:
    """EXEC-016 live, byte by byte: the model the renderer must match for every chunking."""
    out, pending = [], b""
    for byte in data:
        if byte == 0x0A:
            out.append(prefix + pending + b"\n")
            pending = b""
            continue
        if len(pending) == max_line:
            out.append(prefix + pending + b"\n")
            pending = b""
        pending += bytes([byte])
    if pending:
        out.append(prefix + pending + b"\n")
    return b"".join(out)


def test_live_prefixes_whole_lines_per_stream() -> None:
    """EXEC-016: stdout lines to stdout, stderr lines to stderr, each prefixed."""
    sink = Recorder()
    live = LiveOutput(sink=sink)
    live.task_stdout(A, b"compiling\nlinking")
    live.task_stderr(A, b"warning: x\n")
    live.task_stdout(A, b" done\n")
    live.task_finished(done(A))
    assert sink.joined(Stream.STDOUT) == b"[app:build] compiling\n[app:build] linking done\n"
    assert sink.joined(Stream.STDERR) == b"[app:build] warning: x\n"


def test_live_flushes_a_partial_last_line_with_a_newline() -> None:
    """EXEC-016: a trailing partial line is written at task end with a newline added."""
    sink = Recorder()
    live = LiveOutput(sink=sink)
    live.task_stdout(A, b"no newline at the end")
    live.task_stderr(A, b"err too")
    assert sink.writes == []  # nothing before the line is complete
    live.task_finished(done(A))
    assert sink.writes == [
        (Stream.STDOUT, b"[app:build] no newline at the end\n"),
        (Stream.STDERR, b"[app:build] err too\n"),
    ]


def test_live_writes_only_whole_lines_when_tasks_interleave() -> None:
    """EXEC-016: every write holds whole lines of a single task, whatever the interleaving."""
    sink = Recorder()
    live = LiveOutput(sink=sink)
    live.task_stdout(A, b"a1 part")
    live.task_stdout(B, b"b1\nb2 par")
    live.task_stdout(A, b"ial\na2\n")
    live.task_stdout(B, b"tial\n")
    live.task_finished(done(A))
    live.task_finished(done(B))
    for _, data in sink.writes:
        assert data.endswith(b"\n")
        prefixes = {line.split(b"] ")[0] for line in data.splitlines()}
        assert len(prefixes) == 1
    assert sink.joined(Stream.STDOUT) == (
        b"[core:test] b1\n[app:build] a1 partial\n[app:build] a2\n[core:test] b2 partial\n"
    )


def test_live_passes_invalid_utf8_and_control_bytes_through() -> None:
    """EXEC-040: bytes are not decoded; invalid UTF-8, CR and ANSI codes survive."""
    sink = Recorder()
    live = LiveOutput(sink=sink)
    live.task_stdout(A, b"\xff\xfe\xc3\x28 \x1b[31mred\x1b[0m\r\n")
    live.task_finished(done(A))
    assert sink.joined(Stream.STDOUT) == b"[app:build] \xff\xfe\xc3\x28 \x1b[31mred\x1b[0m\r\n"


def test_live_breaks_an_overlong_line() -> None:
    """A line longer than max_line is written in pieces, so memory stays bounded."""
    sink = Recorder()
    live = LiveOutput(sink=sink, max_line=4)
    live.task_stdout(A, b"abcdefghij\nxyzw\n")
    live.task_finished(done(A))
    assert sink.joined(Stream.STDOUT) == (
        b"[app:build] abcd\n[app:build] efgh\n[app:build] ij\n[app:build] xyzw\n"
    )


@settings(max_examples=60)
@given(
    data=st.binary(max_size=200).map(lambda b: b.replace(b"\x00", b"\n")),
    cuts_a=st.lists(st.integers(min_value=0, max_value=300), max_size=20),
    cuts_b=st.lists(st.integers(min_value=0, max_value=300), max_size=20),
    max_line=st.sampled_from([1, 3, 16, 1024]),
)
def test_live_output_does_not_depend_on_chunking(
    data: bytes, cuts_a: list[int], cuts_b: list[int], max_line: int
) -> None:
    """EXEC-016: any two chunkings of the same bytes render identically (and as the model)."""
    outputs = []
    for cuts in (cuts_a, cuts_b):
        sink = Recorder()
        live = LiveOutput(sink=sink, max_line=max_line)
        for chunk in chunked(data, cuts):
            live.task_stdout(A, chunk)
        live.task_finished(done(A))
        assert all(d.endswith(b"\n") for _, d in sink.writes)
        outputs.append(sink.joined(Stream.STDOUT))
    assert outputs[0] == outputs[1] == reference_live(b"[app:build] ", data, max_line)


@settings(max_examples=40)
@given(
    a=st.binary(max_size=120),
    b=st.binary(max_size=120),
    order=st.lists(st.booleans(), max_size=60),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=15),
)
def test_live_interleaved_tasks_render_as_if_alone(
    a: bytes, b: bytes, order: list[bool], cuts: list[int]
) -> None:
    """EXEC-016: interleaving two tasks' chunks never mixes their lines."""
    sink = Recorder()
    live = LiveOutput(sink=sink)
    queues = {A: chunked(a, cuts), B: chunked(b, cuts[::-1])}
    for pick_a in order:
        task = A if pick_a else B
        if queues[task]:
            live.task_stdout(task, queues[task].pop(0))
    for task in (A, B):
        for chunk in queues[task]:
            live.task_stdout(task, chunk)
        live.task_finished(done(task))
    mine = {A: b"", B: b""}
    for _, data in sink.writes:
        task = A if data.startswith(b"[app:build] ") else B
        mine[task] += data
    assert mine[A] == reference_live(b"[app:build] ", a, 1024 * 1024)
    assert mine[B] == reference_live(b"[core:test] ", b, 1024 * 1024)


def test_buffered_writes_stdout_then_stderr_as_contiguous_blocks() -> None:
    """EXEC-016: at task end, stdout then stderr, verbatim, each task's blocks together."""
    sink = Recorder()
    buffered = BufferedOutput(sink=sink)
    buffered.task_stdout(A, b"a-out-1\n")
    buffered.task_stderr(B, b"b-err")
    buffered.task_stderr(A, b"a-err\xff")
    buffered.task_stdout(B, b"b-out\n")
    buffered.task_stdout(A, b"a-out-2 no newline")
    assert sink.writes == []
    buffered.task_finished(done(B))
    buffered.task_finished(done(A))
    assert sink.writes == [
        (Stream.STDOUT, b"b-out\n"),
        (Stream.STDERR, b"b-err"),
        (Stream.STDOUT, b"a-out-1\na-out-2 no newline"),
        (Stream.STDERR, b"a-err\xff"),
    ]


def test_buffered_spills_large_output_to_disk_byte_exact() -> None:
    """Buffered output beyond the memory limit is kept in a temp file, not lost or altered."""
    sink = Recorder()
    buffered = BufferedOutput(sink=sink, memory_limit=16)
    payload = bytes(range(256)) * 64
    for start in range(0, len(payload), 100):
        buffered.task_stdout(A, payload[start : start + 100])
    buffered.task_finished(done(A))
    assert sink.joined(Stream.STDOUT) == payload
    assert sink.joined(Stream.STDERR) == b""


def test_buffered_prefers_the_stream_files(tmp_path: Path) -> None:
    """With StreamFiles at task end, the blocks come from the files (spools or cache blobs)."""
    out, err = tmp_path / "out", tmp_path / "err"
    out.write_bytes(b"from the spool\n")
    err.write_bytes(b"err from the spool\n")
    sink = Recorder()
    buffered = BufferedOutput(sink=sink)
    buffered.task_stdout(A, b"from the chunks\n")
    buffered.task_finished(done(A), streams=StreamFiles(stdout=out, stderr=err))
    assert sink.writes == [
        (Stream.STDOUT, b"from the spool\n"),
        (Stream.STDERR, b"err from the spool\n"),
    ]


@pytest.mark.parametrize("mode", [OutputMode.LIVE, OutputMode.BUFFERED])
def test_a_task_without_output_writes_nothing(mode: OutputMode) -> None:
    """A skipped task (never started) or a silent one produces no output at all."""
    sink = Recorder()
    renderer = output_renderer(mode, sink=sink)
    renderer.run_started(total=2)
    renderer.task_finished(SkipRecord(task=A, cause=SkipCause.UPSTREAM_FAILED, upstream=B))
    renderer.task_started(B, source=RunSource.FRESH)
    renderer.task_finished(done(B))
    renderer.run_finished(records=[], duration_s=0.0)
    assert sink.writes == []


def test_output_renderer_follows_the_mode() -> None:
    """EXEC-016: ``live`` and ``buffered`` select the matching renderer."""
    sink = Recorder()
    assert isinstance(output_renderer(OutputMode.LIVE, sink=sink), LiveOutput)
    assert isinstance(output_renderer(OutputMode.BUFFERED, sink=sink), BufferedOutput)


def test_stream_sink_writes_and_flushes_each_call() -> None:
    """Every sink write reaches the underlying binary stream at once."""
    out, err = io.BufferedWriter(io.BytesIO()), io.BufferedWriter(io.BytesIO())
    sink = StreamSink(stdout=out, stderr=err)
    sink.write(Stream.STDOUT, b"o\n")
    sink.write(Stream.STDERR, b"e\n")
    assert out.raw.getvalue() == b"o\n"
    assert err.raw.getvalue() == b"e\n"


def test_observer_group_forwards_every_call_in_order() -> None:
    """ObserverGroup fans out to each observer, in the order given."""
    calls: list[tuple[str, str]] = []

    class Spy:
        def __init__(self, name: str) -> None:
            self.name = name

        def run_started(self, *, total: int) -> None:
            calls.append((self.name, f"run_started {total}"))

        def task_started(self, task: TaskId, *, source: RunSource) -> None:
            calls.append((self.name, f"started {task} {source.value}"))

        def task_stdout(self, task: TaskId, chunk: bytes) -> None:
            calls.append((self.name, f"stdout {chunk!r}"))

        def task_stderr(self, task: TaskId, chunk: bytes) -> None:
            calls.append((self.name, f"stderr {chunk!r}"))

        def task_finished(self, record: TaskRecord, *, streams: StreamFiles | None = None) -> None:
            calls.append((self.name, f"finished {record.task}"))

        def run_finished(self, *, records: object, duration_s: float) -> None:
            calls.append((self.name, "run_finished"))

    group = ObserverGroup([Spy("one"), Spy("two")])
    group.run_started(total=1)
    group.task_started(A, source=RunSource.LOCAL_CACHE)
    group.task_stdout(A, b"x")
    group.task_stderr(A, b"y")
    group.task_finished(done(A))
    group.run_finished(records=[], duration_s=1.0)
    assert [c for n, c in calls if n == "one"] == [c for n, c in calls if n == "two"]
    assert [n for n, _ in calls] == ["one", "two"] * 6
    assert calls[2] == ("one", "started app:build local-cache")
