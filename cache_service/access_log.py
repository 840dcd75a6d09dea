"""The access event: one structured ``rpc`` line per RPC.

Spec coverage:
* SVC-004 — ``method``, ``code``, ``duration_ms``, ``bytes_in``, ``bytes_out``, ``namespace``,
  ``peer``, ``identity`` at level info.
Out of scope: observing the RPC (:mod:`cache_service.interceptor`).
"""

from __future__ import annotations

from json.encoder import encode_basestring_ascii
from time import time_ns

from hazremote.logs import get_logger, json_line_printer, utc_timestamp

__all__ = ["AccessLog"]


#: The access event as the JSON chain of :mod:`hazremote.logs` renders it (keys sorted,
#: ``json.dumps`` separators): :func:`_render_access` fills it in.
_ACCESS_LINE = (
    '{"bytes_in": %d, "bytes_out": %d, "code": %s, "duration_ms": %r, "event": "rpc", '
    '"identity": %s, "level": "info", "method": %s, "namespace": %s, "peer": %s, '
    '"timestamp": "%s"}'
)


def _render_access(
    fields: tuple[int, str, str, float, int, int, str, str, str],
) -> str:
    """The JSON line of one access event: its time (``time.time_ns()``), method, code,
    duration_ms, bytes_in, bytes_out, namespace, peer and identity."""
    at, method, code, duration_ms, bytes_in, bytes_out, namespace, peer, identity = fields
    return _ACCESS_LINE % (
        bytes_in,
        bytes_out,
        encode_basestring_ascii(code),
        duration_ms,
        encode_basestring_ascii(identity),
        encode_basestring_ascii(method),
        encode_basestring_ascii(namespace),
        encode_basestring_ascii(peer),
        utc_timestamp(at),
    )


class AccessLog:
    """SVC-004: the one access event per RPC, ``rpc`` at level info.

    With the JSON log format (the service's default) the event skips structlog's processors:
    its fields go to :func:`hazremote.logs.json_line_printer`, which renders them
    (:func:`_render_access`, the line the JSON chain would print) in a batch with the events
    around it. Rendered and printed one by one through structlog, the access event cost a
    small lookup about a sixth of its CPU time (issue 5). Any other configuration (console
    format, ``structlog.testing.capture_logs``) goes through structlog.
    """

    def __init__(self, name: str) -> None:
        self._logger = get_logger(name)

    def rpc(
        self,
        *,
        method: str,
        code: str,
        duration_ms: float,
        bytes_in: int,
        bytes_out: int,
        namespace: str,
        peer: str,
        identity: str,
    ) -> None:
        """Log one RPC."""
        printer = json_line_printer("info")
        if printer is None:
            self._logger.info(
                "rpc",
                method=method,
                code=code,
                duration_ms=duration_ms,
                bytes_in=bytes_in,
                bytes_out=bytes_out,
                namespace=namespace,
                peer=peer,
                identity=identity,
            )
            return
        printer(
            _render_access,
            (time_ns(), method, code, duration_ms, bytes_in, bytes_out, namespace, peer, identity),
        )
