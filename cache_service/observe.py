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
* The wrapping happens once per method, as servicers register through
  :meth:`AccessInterceptor.registrar`, and the metric children of each method are resolved
  once: per RPC only the call itself is observed (issue 5: lookups near raw gRPC speed).
Out of scope: parsing tokens (:mod:`cache_service.auth`), status mapping (``_status``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
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

__all__ = ["AccessInterceptor", "HandlerRegistrar", "ServiceMetrics"]

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

        self._lookup_hits = self.manifest_lookups.labels(result="hit")
        self._lookup_misses = self.manifest_lookups.labels(result="miss")

    def manifest_lookup(self, hit: bool) -> None:
        (self._lookup_hits if hit else self._lookup_misses).inc()


@dataclass(slots=True)
class _Rpc:
    started: float
    peer: str = ""
    bytes_in: int = 0
    bytes_out: int = 0
    namespace: str = ""
    identity: Identity = ANONYMOUS


def _short(method: str) -> str:
    """``/haz.remote.v1.ContentStore/WriteBlob`` → ``ContentStore/WriteBlob``."""
    service, _, name = method.lstrip("/").rpartition("/")
    return f"{service.rpartition('.')[2]}/{name}"


_CODES_BY_NUMBER: dict[int, grpc.StatusCode] = {code.value[0]: code for code in grpc.StatusCode}


def _code_of(context: Any, error: BaseException | None) -> grpc.StatusCode:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if isinstance(code, int) and code in _CODES_BY_NUMBER:
        return _CODES_BY_NUMBER[code]
    if error is None:
        return grpc.StatusCode.OK
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


def _size(message: Any) -> int:
    size = getattr(message, "ByteSize", None)
    return int(size()) if size is not None else 0


class _MethodSeries:
    """The metric children of one method, resolved once (``labels()`` locks and hashes on every
    call, which an RPC should not pay for four times)."""

    __slots__ = ("_by_code", "_metrics", "bytes_in", "bytes_out", "method", "name", "public")

    def __init__(self, metrics: ServiceMetrics, method: str) -> None:
        self.method = method
        self.name = _short(method)
        #: Health checking and reflection are never authenticated.
        self.public = method.startswith(_UNAUTHENTICATED_PREFIXES)
        self._metrics = metrics
        self.bytes_in = metrics.bytes_in.labels(method=self.name)
        self.bytes_out = metrics.bytes_out.labels(method=self.name)
        self._by_code: dict[grpc.StatusCode, tuple[Any, Any]] = {}

    def by_code(self, code: grpc.StatusCode) -> tuple[Any, Any]:
        """The ``(rpcs, latency)`` children of ``code`` for this method."""
        series = self._by_code.get(code)
        if series is None:
            m = self._metrics
            series = (
                m.rpcs.labels(method=self.name, code=code.name),
                m.latency.labels(method=self.name, code=code.name),
            )
            self._by_code[code] = series
        return series


class AccessInterceptor:
    """Wraps every handler: authenticate, bind identity, count, time, log once.

    The wrapping happens once per method when the servicers register (through
    :meth:`registrar`), not per RPC: a ``grpc.aio`` server interceptor runs an extra coroutine
    and builds a new handler for every call, which cost a small lookup about a third of the
    server's CPU time.
    """

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

    def registrar(self, server: grpc.aio.Server) -> HandlerRegistrar:
        """A stand-in for ``server`` to register servicers on: what is registered through
        it reaches ``server`` with every method handler wrapped by :meth:`wrap`."""
        return HandlerRegistrar(server=server, interceptor=self)

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """``handler`` of the fully qualified ``method``, observed (and authenticated unless
        it is health checking or reflection)."""
        kwargs = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        series = _MethodSeries(self._metrics, method)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(series, handler.unary_unary, stream_in=False), **kwargs
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._unary(series, handler.stream_unary, stream_in=True), **kwargs
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._streaming(series, handler.unary_stream, stream_in=False),
                **kwargs,
            )
        return grpc.stream_stream_rpc_method_handler(
            self._streaming(series, handler.stream_stream, stream_in=True), **kwargs
        )

    # -- wrappers -------------------------------------------------------------------------

    def _admit(
        self, series: _MethodSeries, rpc: _Rpc, request: Any, context: Any, *, stream_in: bool
    ) -> tuple[grpc.StatusCode, str] | None:
        """Fill ``rpc`` in place (so a refused call is still logged with its identity); the
        status that refuses the call, or None."""
        rpc.peer = str(context.peer())
        if not stream_in:
            rpc.bytes_in = _size(request)
            rpc.namespace = str(getattr(request, "namespace", ""))
        if series.public:
            return None
        method = series.method
        metadata = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
        try:
            rpc.identity = self._authenticator.authenticate(method=method, metadata=metadata)
            if self._authorizer is not None:
                self._authorizer.authorize(rpc.identity, method=method, namespace=rpc.namespace)
        except AccessDeniedError as exc:
            return grpc.StatusCode.PERMISSION_DENIED, str(exc)
        except PermissionError as exc:
            return grpc.StatusCode.UNAUTHENTICATED, str(exc)
        return None

    def _counting(self, rpc: _Rpc, requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async def counted() -> AsyncIterator[Any]:
            async for message in requests:
                rpc.bytes_in += _size(message)
                yield message

        return counted()

    def _unary(self, series: _MethodSeries, behavior: Any, *, stream_in: bool) -> Any:
        async def wrapped(request: Any, context: Any) -> Any:
            rpc = _Rpc(started=time.perf_counter())
            error: BaseException | None = None
            token = None
            try:
                refused = self._admit(series, rpc, request, context, stream_in=stream_in)
                if refused is not None:
                    await context.abort(*refused)
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
                self._finish(series, rpc, context, error)

        return wrapped

    def _streaming(self, series: _MethodSeries, behavior: Any, *, stream_in: bool) -> Any:
        async def wrapped(request: Any, context: Any) -> AsyncIterator[Any]:
            rpc = _Rpc(started=time.perf_counter())
            error: BaseException | None = None
            token = None
            try:
                refused = self._admit(series, rpc, request, context, stream_in=stream_in)
                if refused is not None:
                    await context.abort(*refused)
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
                self._finish(series, rpc, context, error)
                if token is not None:
                    # A stream the client abandoned is closed (GeneratorExit) by a finalizer
                    # in another context, where the token cannot be reset: nothing to undo.
                    with contextlib.suppress(ValueError):
                        reset_identity(token)

        return wrapped

    def _finish(
        self, series: _MethodSeries, rpc: _Rpc, context: Any, error: BaseException | None
    ) -> None:
        duration = time.perf_counter() - rpc.started
        code = _code_of(context, error)
        rpcs, latency = series.by_code(code)
        rpcs.inc()
        latency.observe(duration)
        series.bytes_in.inc(rpc.bytes_in)
        series.bytes_out.inc(rpc.bytes_out)
        if code is grpc.StatusCode.UNAVAILABLE:
            self._metrics.storage_errors.inc()
        _log.info(
            "rpc",
            method=series.name,
            code=code.name,
            duration_ms=round(duration * 1000, 3),
            bytes_in=rpc.bytes_in,
            bytes_out=rpc.bytes_out,
            namespace=rpc.namespace,
            peer=rpc.peer,
            identity=rpc.identity.name,
        )


class _ObservedGenericHandler(grpc.GenericRpcHandler):  # type: ignore[misc]
    """A generic handler whose method handlers come out wrapped (each wrapped once)."""

    def __init__(self, *, inner: grpc.GenericRpcHandler, interceptor: AccessInterceptor) -> None:
        self._inner = inner
        self._interceptor = interceptor
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def service(self, handler_call_details: Any) -> grpc.RpcMethodHandler | None:
        handler = self._inner.service(handler_call_details)
        if handler is None:
            return None
        method: str = handler_call_details.method
        known = self._wrapped.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        wrapped = self._interceptor.wrap(method, handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped


class HandlerRegistrar:
    """What servicers register on instead of the server (see
    :meth:`AccessInterceptor.registrar`): the two registration methods of
    ``grpc.aio.Server`` that generated ``add_*_to_server`` functions call."""

    def __init__(self, *, server: grpc.aio.Server, interceptor: AccessInterceptor) -> None:
        self._server = server
        self._interceptor = interceptor

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers(
            tuple(
                _ObservedGenericHandler(inner=handler, interceptor=self._interceptor)
                for handler in handlers
            )
        )

    def add_registered_method_handlers(
        self, service_name: str, method_handlers: Mapping[str, grpc.RpcMethodHandler]
    ) -> None:
        self._server.add_registered_method_handlers(
            service_name,
            {
                name: self._interceptor.wrap(f"/{service_name}/{name}", handler)
                for name, handler in method_handlers.items()
            },
        )
