"""Per-RPC observation: one access-log event, Prometheus metrics, and the identity seam.

Spec coverage:
* SVC-004 — one structured access event per RPC (``method``, ``code``, ``duration_ms``,
  ``bytes_in``, ``bytes_out``, ``namespace``, ``peer``, ``identity``); Prometheus counters of
  RPCs and latencies by method and status, bytes in/out, storage errors, manifest lookups by
  result (hit ratio = hits / all).
* SEC-002 (seam) — the interceptor asks an :class:`~cache_service.identity.Authenticator`
  who calls and binds the identity for the handler (SEC-006 producer); a refusal is
  ``UNAUTHENTICATED``. Health checking and reflection are never authenticated.
* SEC-002/003 — with an :class:`~cache_service.identity.Authorizer` (the tokens file,
  :mod:`cache_service.auth`), the same interceptor then authorizes the call against the
  request's namespace; :class:`~cache_service.identity.AccessDeniedError` is
  ``PERMISSION_DENIED``. The access event names the token as ``identity``.
Out of scope: parsing tokens (:mod:`cache_service.auth`), status mapping (``_status``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram

from cache_service.identity import (
    ANONYMOUS,
    AccessDeniedError,
    Authenticator,
    Authorizer,
    Identity,
    reset_identity,
    set_identity,
)
from hazremote.logs import get_logger

__all__ = ["AccessInterceptor", "ServiceMetrics"]

_log = get_logger("cache_service.access")
_UNAUTHENTICATED_PREFIXES = ("/grpc.health.", "/grpc.reflection.")


class ServiceMetrics:
    """The Prometheus metrics of one server, in their own registry (several servers may run in
    one process, e.g. in tests)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.rpcs = Counter(
            "haz_cache_rpcs",
            "RPCs handled, by method and status code",
            ["method", "code"],
            registry=r,
        )
        self.latency = Histogram(
            "haz_cache_rpc_duration_seconds",
            "RPC latency, by method and status code",
            ["method", "code"],
            registry=r,
            buckets=(
                0.0005,
                0.001,
                0.0025,
                0.005,
                0.01,
                0.025,
                0.05,
                0.1,
                0.25,
                0.5,
                1,
                2.5,
                5,
                10,
                30,
                60,
            ),
        )
        self.bytes_in = Counter(
            "haz_cache_received_bytes",
            "Request bytes received, by method",
            ["method"],
            registry=r,
        )
        self.bytes_out = Counter(
            "haz_cache_sent_bytes", "Response bytes sent, by method", ["method"], registry=r
        )
        self.storage_errors = Counter(
            "haz_cache_storage_errors",
            "RPCs or batch items that failed in storage",
            registry=r,
        )
        self.manifest_lookups = Counter(
            "haz_cache_manifest_lookups",
            "Manifest lookups by result (hit, miss)",
            ["result"],
            registry=r,
        )

    def manifest_lookup(self, hit: bool) -> None:
        self.manifest_lookups.labels(result="hit" if hit else "miss").inc()


@dataclass(slots=True)
class _Rpc:
    method: str
    peer: str
    started: float = field(default_factory=time.perf_counter)
    bytes_in: int = 0
    bytes_out: int = 0
    namespace: str = ""
    identity: Identity = ANONYMOUS


def _short(method: str) -> str:
    """``/haz.remote.v1.ContentStore/WriteBlob`` → ``ContentStore/WriteBlob``."""
    service, _, name = method.lstrip("/").rpartition("/")
    return f"{service.rpartition('.')[2]}/{name}"


def _code_of(context: Any, error: BaseException | None) -> grpc.StatusCode:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if isinstance(code, int):
        for candidate in grpc.StatusCode:
            if candidate.value[0] == code:
                return candidate
    if error is None:
        return grpc.StatusCode.OK
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


def _size(message: Any) -> int:
    size = getattr(message, "ByteSize", None)
    return int(size()) if size is not None else 0


class AccessInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Wraps every handler: authenticate, bind identity, count, time, log once."""

    def __init__(
        self,
        *,
        metrics: ServiceMetrics,
        authenticator: Authenticator,
        authorizer: Authorizer | None = None,
    ) -> None:
        self._metrics = metrics
        self._authenticator = authenticator
        self._authorizer = authorizer

    async def intercept_service(
        self,
        continuation: Callable[[Any], Awaitable[Any]],
        handler_call_details: Any,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method: str = handler_call_details.method
        kwargs = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, handler.unary_unary, stream_in=False), **kwargs
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._unary(method, handler.stream_unary, stream_in=True), **kwargs
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._streaming(method, handler.unary_stream, stream_in=False), **kwargs
            )
        return grpc.stream_stream_rpc_method_handler(
            self._streaming(method, handler.stream_stream, stream_in=True), **kwargs
        )

    # -- wrappers -------------------------------------------------------------------------

    async def _begin(self, rpc: _Rpc, request: Any, context: Any, *, stream_in: bool) -> None:
        """Fill ``rpc`` in place, so a refused call is still logged with its identity."""
        method = rpc.method
        rpc.peer = str(context.peer())
        if not stream_in:
            rpc.bytes_in = _size(request)
            rpc.namespace = str(getattr(request, "namespace", ""))
        if not method.startswith(_UNAUTHENTICATED_PREFIXES):
            metadata = {
                k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)
            }
            try:
                rpc.identity = self._authenticator.authenticate(method=method, metadata=metadata)
                if self._authorizer is not None:
                    self._authorizer.authorize(rpc.identity, method=method, namespace=rpc.namespace)
            except AccessDeniedError as exc:
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
            except PermissionError as exc:
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))

    def _counting(self, rpc: _Rpc, requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async def counted() -> AsyncIterator[Any]:
            async for message in requests:
                rpc.bytes_in += _size(message)
                yield message

        return counted()

    def _unary(self, method: str, behavior: Any, *, stream_in: bool) -> Any:
        async def wrapped(request: Any, context: Any) -> Any:
            rpc = _Rpc(method=method, peer="")
            error: BaseException | None = None
            token = None
            try:
                await self._begin(rpc, request, context, stream_in=stream_in)
                token = set_identity(rpc.identity)
                if stream_in:
                    request = self._counting(rpc, request)
                response = await behavior(request, context)
                rpc.bytes_out = _size(response)
                return response
            except BaseException as exc:
                error = exc
                raise
            finally:
                if token is not None:
                    reset_identity(token)
                self._finish(rpc, context, error)

        return wrapped

    def _streaming(self, method: str, behavior: Any, *, stream_in: bool) -> Any:
        async def wrapped(request: Any, context: Any) -> AsyncIterator[Any]:
            rpc = _Rpc(method=method, peer="")
            error: BaseException | None = None
            token = None
            try:
                await self._begin(rpc, request, context, stream_in=stream_in)
                token = set_identity(rpc.identity)
                if stream_in:
                    request = self._counting(rpc, request)
                async for response in behavior(request, context):
                    rpc.bytes_out += _size(response)
                    yield response
            except BaseException as exc:
                error = exc
                raise
            finally:
                self._finish(rpc, context, error)
                if token is not None:
                    # A stream the client abandoned is closed (GeneratorExit) by a finalizer
                    # in another context, where the token cannot be reset: nothing to undo.
                    with contextlib.suppress(ValueError):
                        reset_identity(token)

        return wrapped

    def _finish(self, rpc: _Rpc, context: Any, error: BaseException | None) -> None:
        duration = time.perf_counter() - rpc.started
        code = _code_of(context, error)
        name = _short(rpc.method)
        m = self._metrics
        m.rpcs.labels(method=name, code=code.name).inc()
        m.latency.labels(method=name, code=code.name).observe(duration)
        m.bytes_in.labels(method=name).inc(rpc.bytes_in)
        m.bytes_out.labels(method=name).inc(rpc.bytes_out)
        if code is grpc.StatusCode.UNAVAILABLE:
            m.storage_errors.inc()
        _log.info(
            "rpc",
            method=name,
            code=code.name,
            duration_ms=round(duration * 1000, 3),
            bytes_in=rpc.bytes_in,
            bytes_out=rpc.bytes_out,
            namespace=rpc.namespace,
            peer=rpc.peer,
            identity=rpc.identity.name,
        )
