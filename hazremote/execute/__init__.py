"""Running tasks: processes, output rendering, progress, and (elsewhere in the package) the
scheduler.

Public surface of the process and output half (EXEC-008, 009, 012..017, 040):

* :mod:`.spawn` — the :class:`ProcessSpawner` port, :class:`SpawnRequest`,
  :class:`ProcessOutcome`, and the local adapter :class:`SubprocessSpawner` (a per-task
  supervisor that is a child subreaper on Linux; see :mod:`._reaper`).
* :mod:`.observers` — the :class:`RunObserver` port, :class:`LiveOutput` /
  :class:`BufferedOutput` renderers writing through an :class:`OutputSink`.
* :mod:`.progress` — :class:`PlainProgress`, :class:`TtyProgress` (``rich``, imported lazily),
  the task line and epilogue formats, and :func:`console_observer` wiring it all for ``haz run``.

The scheduling half: :mod:`.scheduler` (``run_graph``, the one reporter of finished tasks),
:mod:`.lifecycle` (probe → restore | execute → store, over the tiers of
:mod:`hazremote.cache.tiers`), :mod:`.executor` (the :class:`Executor` port and
:class:`LocalExecutor`), :mod:`.lookahead` (the remote lookahead), :mod:`.records`.

Spec coverage: see each module.
"""

from hazremote.execute.observers import (
    BufferedOutput,
    LiveOutput,
    NullObserver,
    ObserverGroup,
    OutputSink,
    RunObserver,
    Stream,
    StreamFiles,
    StreamSink,
    output_renderer,
)
from hazremote.execute.progress import (
    PlainProgress,
    TtyProgress,
    color_enabled,
    console_observer,
    epilogue_lines,
    format_task_line,
)
from hazremote.execute.spawn import (
    CancelSignal,
    OutputCallback,
    ProcessOutcome,
    ProcessSpawner,
    SpawnRequest,
    SubprocessSpawner,
    describe_exec_error,
)

__all__ = [
    "BufferedOutput",
    "CancelSignal",
    "LiveOutput",
    "NullObserver",
    "ObserverGroup",
    "OutputCallback",
    "OutputSink",
    "PlainProgress",
    "ProcessOutcome",
    "ProcessSpawner",
    "RunObserver",
    "SpawnRequest",
    "Stream",
    "StreamFiles",
    "StreamSink",
    "SubprocessSpawner",
    "TtyProgress",
    "color_enabled",
    "console_observer",
    "describe_exec_error",
    "epilogue_lines",
    "format_task_line",
    "output_renderer",
]
