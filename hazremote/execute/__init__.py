"""Running tasks: the scheduler, one task's lifecycle, processes, output and progress.

Modules:
* :mod:`.scheduler` — ``run_graph``: which task runs when; the one reporter of finished tasks.
* :mod:`.lifecycle` — probe → restore | execute → store, over :mod:`hazremote.cache.tiers`.
* :mod:`.executor` — the :class:`Executor` port and :class:`LocalExecutor`.
* :mod:`.lookahead` — the remote lookahead; :mod:`.predict` — ``--dry-run`` and ``haz why``.
* :mod:`.spawn` — the :class:`ProcessSpawner` port and :class:`SubprocessSpawner` (:mod:`._reaper`).
* :mod:`.observers`, :mod:`.progress` — the :class:`RunObserver` port, task output, progress.
* :mod:`.records`, :mod:`.claims`, :mod:`.locks`, :mod:`.outputs` — records, overlaps, task locks.

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
