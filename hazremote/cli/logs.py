"""structlog configuration shared by ``haz``, ``haz-cache-service`` and ``haz-worker`` (EXEC-040).

Diagnostics always go to stderr so that task output on stdout can be piped.
"""

from __future__ import annotations

import logging
import sys

__all__ = ["configure_logging"]

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
_LEVELS["error"] = logging.ERROR


def configure_logging(*, level: str = "warning", fmt: str = "console") -> None:
    """Route structlog events at or above ``level`` to stderr as console text or JSON lines."""
    import structlog

    renderer: structlog.types.Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer(sort_keys=True)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
