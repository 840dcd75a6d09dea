"""Diagnostics of ``haz``, ``haz-cache-service`` and ``haz-worker`` (EXEC-040): structlog, stderr.

Importing structlog costs ~60 ms here, more than a whole cached task replay is allowed, so
:func:`get_logger` hands out a lazy logger: structlog is imported and configured on the first
event actually logged. A run that logs nothing never pays for it.

A hot path may skip structlog's processors for one kind of event (the cache service's access
event, one per RPC, SVC-004): while the JSON chain is live, :func:`json_line_printer` takes
the event's fields and a function rendering them as that chain would, and prints the line
within milliseconds, rendered and written in a batch, in order with every other event.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

__all__ = ["configure_logging", "get_logger", "json_line_printer", "utc_timestamp"]

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
_settings = {"level": "warning", "format": "console"}
_configured = False
_generation = [0]  # bumped by every configuration: loggers built earlier rebuild themselves

#: How many deferred lines, and how long after the first, :class:`_LinePrinter` holds back:
#: rendered and written one by one, the cache service's access event cost a small lookup
#: ~8 % of its CPU time (issue 5). At most this late, the access log shows an RPC.
DEFER_LINES = 64
DEFER_SECONDS = 0.005

#: A line handed over unrendered: ``render(fields)`` is the line.
_Deferred = tuple[Callable[[Any], str], Any]


class _LinePrinter:
    """The end of every chain: one rendered event per line on a stream (stderr).

    Deferred lines (:meth:`defer`) are rendered and written together, after at most
    :data:`DEFER_LINES` lines or :data:`DEFER_SECONDS`, before any line printed after them
    (the order of events is kept), and at exit. Outside an event loop a deferred line starts
    no batch: it is written at once, or with the batch already due.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self._pending: list[str | _Deferred] = []
        #: When the last flush set for a batch comes (``time.monotonic()``).
        self._due = 0.0

    def msg(self, message: str) -> None:
        with self._lock:
            self._pending.append(message)
            self._write()

    # structlog calls the method named after the event's level.
    log = debug = info = warn = warning = err = error = critical = exception = msg

    def defer(self, render: Callable[[Any], str], fields: Any) -> None:
        """Print the line ``render(fields)`` soon (see the class)."""
        with self._lock:
            pending = self._pending
            pending.append((render, fields))
            if len(pending) >= DEFER_LINES:
                self._write()
                return
            if time.monotonic() < self._due:
                return  # the flush set for the batch comes by then
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self._write()  # no event loop to flush later
                return
            # Set again when the last one has passed: also after its loop closed early.
            self._due = time.monotonic() + DEFER_SECONDS
        loop.call_later(DEFER_SECONDS, self.flush)

    def flush(self) -> None:
        """Print the deferred lines now."""
        with self._lock:
            if self._pending:
                self._write()

    def _write(self) -> None:
        pending = self._pending
        self._pending = []
        lines = [item if isinstance(item, str) else item[0](item[1]) for item in pending]
        lines.append("")
        self._stream.write("\n".join(lines))
        self._stream.flush()


_printer: list[_LinePrinter] = []
#: The JSON chain as configured (the list structlog runs, and what it held then; both empty
#: for the console format): see :func:`json_line_printer`.
_json_chain: list[Any] = []
_json_chain_items: list[Any] = []


@atexit.register
def _flush_deferred() -> None:
    for printer in _printer:
        printer.flush()


def configure_logging(*, level: str = "warning", fmt: str = "console") -> None:
    """Choose the level and ``console``/``json`` format; takes effect at the first event."""
    global _configured
    _settings["level"] = level
    _settings["format"] = fmt
    _configured = False


def _console(_: object, method: str, event: dict[str, Any]) -> str:
    """``LEVEL event key=value …`` — a plain line for people (no colours, no extra imports)."""
    message = str(event.pop("event", ""))
    event.pop("timestamp", None)
    level = str(event.pop("level", method))
    fields = " ".join(f"{k}={v}" for k, v in sorted(event.items()))
    return f"haz: {level}: {message}" + (f" [{fields}]" if fields else "")


def _configure() -> None:
    global _configured, _json_chain
    import structlog

    renderer: Any
    if _settings["format"] == "json":
        renderer = structlog.processors.JSONRenderer(sort_keys=True)
    else:
        renderer = _console
    processors = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        renderer,
    ]
    _flush_deferred()
    printer = _LinePrinter(sys.stderr)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[_settings["level"]]),
        logger_factory=lambda *_: printer,
        cache_logger_on_first_use=False,
    )
    _printer[:] = [printer]
    _json_chain = processors if _settings["format"] == "json" else []
    _json_chain_items[:] = _json_chain
    _configured = True
    _generation[0] += 1


def json_line_printer(level: str) -> Callable[[Callable[[Any], str], Any], None] | None:
    """Where a hot path may print an event of ``level`` it renders itself, or None (log it
    through :func:`get_logger`'s logger then, which drops it if ``level`` is filtered out).

    Not None only while ``level`` is logged and events render through this module's JSON
    chain (the ``json`` format, and a chain nobody edited since: not, e.g., inside
    ``structlog.testing.capture_logs``). The printer takes ``render`` and ``fields``;
    ``render(fields)``, called later (in a batch, in order with every other event, within
    :data:`DEFER_SECONDS`), must return what the chain renders: the JSON object of the
    event's fields plus ``event``, ``level`` and ``timestamp`` (:func:`utc_timestamp` of the
    event's time, taken before), keys sorted, ``json.dumps``'s default separators and ASCII
    escaping, no newline.
    """
    if _LEVELS[level] < _LEVELS[_settings["level"]]:
        return None
    if not _configured:
        _configure()
    # The list every logger built since the configuration runs (capture_logs edits it in
    # place; another structlog.configure() reaches only loggers built after it).
    if not _json_chain or _json_chain != _json_chain_items:
        return None
    return _printer[0].defer


#: ``YYYY-MM-DDTHH:MM:SS`` of one second (the last one asked for), for :func:`utc_timestamp`.
_second: list[Any] = [None, ""]


def utc_timestamp(time_ns: int) -> str:
    """``time_ns`` (``time.time_ns()``) as the chain's ``TimeStamper(fmt="iso", utc=True)``
    writes it (``2024-05-01T12:00:00.123456Z``; no fraction on a whole second), in a
    fraction of its time: the date and time of day are formatted once per second."""
    seconds, nanos = divmod(time_ns, 1_000_000_000)
    if _second[0] != seconds:
        _second[1] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        _second[0] = seconds
    micros = nanos // 1000
    return f"{_second[1]}.{micros:06d}Z" if micros else f"{_second[1]}Z"


class _LazyLogger:
    def __init__(self, name: str, bound: dict[str, Any]) -> None:
        self._name = name
        self._bound = bound
        self._logger: Any = None
        self._generation = -1

    def bind(self, **fields: Any) -> _LazyLogger:
        return _LazyLogger(self._name, {**self._bound, **fields})

    def _emit(self, method: str, event: str, fields: dict[str, Any]) -> None:
        if _LEVELS[method] < _LEVELS[_settings["level"]]:
            return
        if not _configured:
            _configure()
        if self._logger is None or self._generation != _generation[0]:
            # Built once per configuration: a server logs one event per RPC (SVC-004), and
            # re-binding a structlog logger per event costs more than rendering it.
            import structlog

            self._logger = structlog.get_logger(self._name).bind(**self._bound)
            self._generation = _generation[0]
        getattr(self._logger, method)(event, **fields)

    def debug(self, event: str, **fields: Any) -> None:
        self._emit("debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._emit("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._emit("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._emit("error", event, fields)


def get_logger(name: str) -> _LazyLogger:
    return _LazyLogger(name, {})
