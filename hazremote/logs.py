"""Diagnostics of ``haz``, ``haz-cache-service`` and ``haz-worker`` (EXEC-040): structlog, stderr.

Importing structlog costs ~60 ms here, more than a whole cached task replay is allowed, so
:func:`get_logger` hands out a lazy logger: structlog is imported and configured on the first
event actually logged. A run that logs nothing never pays for it.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

__all__ = ["configure_logging", "get_logger"]

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
_settings = {"level": "warning", "format": "console"}
_configured = False
_generation = [0]  # bumped by every configuration: loggers built earlier rebuild themselves


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
    global _configured
    import structlog

    renderer: Any
    if _settings["format"] == "json":
        renderer = structlog.processors.JSONRenderer(sort_keys=True)
    else:
        renderer = _console
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[_settings["level"]]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    _configured = True
    _generation[0] += 1


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
