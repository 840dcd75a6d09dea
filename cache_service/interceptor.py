"""The access interceptor: authenticate, authorize, observe and log every RPC.

Spec coverage:
* SVC-004 — one access event and the metrics of every RPC, wire bytes counted where decoded.
* SEC-002 — the caller is authenticated (never for health or reflection) and bound.
* SEC-003 — with an :class:`~cache_service.identity.Authorizer`, the request's namespace.
* SEC-006 — the bound identity is the producer the handlers record.
* Issue 13 — undecodable request bytes are ``INVALID_ARGUMENT`` (after authentication).
Out of scope: parsing tokens (:mod:`cache_service.auth`), status mapping (``_status``).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar, Token
from dataclasses import dataclass
from time import perf_counter
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from cache_service.access_log import AccessLog
from cache_service.errors import InvalidRequestError
from cache_service.identity import (
    ANONYMOUS,
    Authenticator,
    Authorizer,
    Identity,
    OpenAccess,
    current_identity,
    reset_identity,
    set_identity,
)
from cache_service.metrics import ServiceMetrics
from cache_service.servicers._status import status_of

__all__ = ["AccessInterceptor", "HandlerRegistrar"]

_UNAUTHENTICATED_PREFIXES = ("/grpc.health.", "/grpc.reflection.")

_log = AccessLog("cache_service.access")


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


#: What ``context.code()`` may answer (a ``grpc.StatusCode``, or its number), as a status.
_STATUS_OF_CODE: dict[object, grpc.StatusCode] = {
    **{code.value[0]: code for code in grpc.StatusCode},
    **{code: code for code in grpc.StatusCode},
}


_OK = grpc.StatusCode.OK


def _code_of_error(error: BaseException | None) -> grpc.StatusCode:
    """The status of an RPC whose context holds none (see :data:`_STATUS_OF_CODE`)."""
    if error is None:
        return grpc.StatusCode.OK
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


#: The RPC whose handler runs in this context, for responses a handler writes itself with
#: ``context.write`` (health ``Watch``): those are encoded by :func:`_encoder`, not the wrapper.
_WRITING: ContextVar[_Rpc | None] = ContextVar("haz_rpc_writing", default=None)

_Codec = Callable[[Any], Any]


def _identity(message: Any) -> Any:
    return message


def _encoder(serializer: _Codec) -> _Codec:
    """The response serializer gRPC gets: what the wrapper already encoded (bytes) passes
    through; a message a handler wrote with ``context.write`` is encoded here and counted."""

    def encode(message: Any) -> Any:
        if message.__class__ is bytes:
            return message
        raw = serializer(message)
        rpc = _WRITING.get()
        if rpc is not None:
            rpc.bytes_out += len(raw)
        return raw

    return encode


@dataclass(frozen=True, slots=True)
class _MessageCodec:
    """The (de)serializers of one method, applied by its wrapper."""

    decode: _Codec
    encode: _Codec
    #: The method takes a stream of requests.
    stream_in: bool


@dataclass(frozen=True, slots=True)
class _CodeSeries:
    """The metric children of one (method, status code), and the code's name."""

    rpcs: Any
    latency: Any
    name: str


class _MethodSeries:
    """The metric children of one method, resolved once (``labels()`` locks and hashes on every
    call, which an RPC should not pay for four times)."""

    __slots__ = ("_metrics", "by_code", "bytes_in", "bytes_out", "method", "name", "ok", "public")

    def __init__(self, metrics: ServiceMetrics, method: str) -> None:
        self.method = method
        self.name = _short(method)
        #: Health checking and reflection are never authenticated.
        self.public = method.startswith(_UNAUTHENTICATED_PREFIXES)
        self._metrics = metrics
        self.bytes_in = metrics.bytes_in.labels(method=self.name)
        self.bytes_out = metrics.bytes_out.labels(method=self.name)
        #: The children of each status code seen so far (:meth:`add_code` adds one), and
        #: those of ``OK`` (the usual one) once seen.
        self.by_code: dict[grpc.StatusCode, _CodeSeries] = {}
        self.ok: _CodeSeries | None = None

    def add_code(self, code: grpc.StatusCode) -> _CodeSeries:
        """The metric children of ``code`` for this method, resolved now."""
        m = self._metrics
        series = _CodeSeries(
            rpcs=m.rpcs.labels(method=self.name, code=code.name),
            latency=m.latency.labels(method=self.name, code=code.name),
            name=code.name,
        )
        self.by_code[code] = series
        if code is _OK:
            self.ok = series
        return series


class _Metadata(Mapping[str, str]):
    """The call's metadata with string values, read from the context only when the
    authenticator looks (open access never does)."""

    __slots__ = ("_context", "_items")

    def __init__(self, context: Any) -> None:
        self._context = context
        self._items: dict[str, str] | None = None

    def _read(self) -> dict[str, str]:
        if self._items is None:
            self._items = {
                k: v for k, v in (self._context.invocation_metadata() or ()) if isinstance(v, str)
            }
        return self._items

    def __getitem__(self, key: str) -> str:
        return self._read()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._read())

    def __len__(self) -> int:
        return len(self._read())


def _bind(identity: Identity) -> Token[Identity] | None:
    """Bind ``identity`` for the handler; None when it already is (an anonymous call in a
    fresh task: nothing to set, nothing to reset)."""
    return None if identity is current_identity() else set_identity(identity)


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
        #: Open access lets every call in as ``anonymous``: nothing to ask per call.
        self._open = isinstance(authenticator, OpenAccess) and authorizer is None

    def registrar(self, server: grpc.aio.Server) -> HandlerRegistrar:
        """A stand-in for ``server`` to register servicers on: what is registered through
        it reaches ``server`` with every method handler wrapped by :meth:`wrap`."""
        return HandlerRegistrar(server=server, interceptor=self)

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """``handler`` of the fully qualified ``method``, observed (and authenticated unless
        it is health checking or reflection)."""
        # gRPC hands the wrapper the raw request bytes (no deserializer) and sends the bytes
        # it returns or yields as they are: the wire sizes are counted where they are known.
        stream_in = handler.request_streaming
        codec = _MessageCodec(
            decode=handler.request_deserializer or _identity,
            encode=handler.response_serializer or _identity,
            stream_in=stream_in,
        )
        series = _MethodSeries(self._metrics, method)
        # A unary response is always the wrapper's bytes: gRPC sends them as they are.
        unary = {"request_deserializer": None, "response_serializer": None}
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary_unary(series, codec, handler.unary_unary), **unary
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._stream_unary(series, codec, handler.stream_unary), **unary
            )
        kwargs = {
            "request_deserializer": None,
            "response_serializer": _encoder(codec.encode),
        }
        behavior = handler.stream_stream if stream_in else handler.unary_stream
        if inspect.iscoroutinefunction(behavior):
            # A handler that writes its responses (``context.write``) instead of yielding them.
            observed = self._writing(series, codec, behavior)
        else:
            observed = self._streaming(series, codec, behavior)
        if stream_in:
            return grpc.stream_stream_rpc_method_handler(observed, **kwargs)
        return grpc.unary_stream_rpc_method_handler(observed, **kwargs)

    # -- wrappers -------------------------------------------------------------------------

    def _admit(
        self, method: str, namespace: str, context: Any
    ) -> tuple[Identity, tuple[grpc.StatusCode, str] | None]:
        """Who calls (``anonymous`` unless authenticated, so a refused call is still logged
        with its identity), and the status that refuses the call, or None."""
        identity = ANONYMOUS
        try:
            identity = self._authenticator.authenticate(method=method, metadata=_Metadata(context))
            if self._authorizer is not None:
                self._authorizer.authorize(identity, method=method, namespace=namespace)
        except PermissionError as exc:  # AccessDeniedError too
            return identity, status_of(exc)
        return identity, None

    def _undecodable(
        self, series: _MethodSeries, context: Any, error: DecodeError
    ) -> tuple[Identity, tuple[grpc.StatusCode, str]]:
        """Who calls and the status that ends a call whose request does not decode:
        ``UNAUTHENTICATED`` unless the caller is authenticated, else ``INVALID_ARGUMENT``."""
        identity = ANONYMOUS
        if self._checks(series):
            try:
                identity = self._authenticator.authenticate(
                    method=series.method, metadata=_Metadata(context)
                )
            except PermissionError as exc:
                return identity, status_of(exc)
        return identity, (
            grpc.StatusCode.INVALID_ARGUMENT,
            f"{series.name}: the request is not a valid message ({error})",
        )

    def _checks(self, series: _MethodSeries) -> bool:
        """Whether calls of ``series`` are authenticated: not health checking or reflection,
        and not under open access (which lets every call in as ``anonymous``)."""
        return not (series.public or self._open)

    async def _enter(
        self, series: _MethodSeries, codec: _MessageCodec, rpc: _Rpc, raw: Any, context: Any
    ) -> tuple[Any, Token[Identity] | None]:
        """A streaming wrapper's start: the peer, the request (decoded, or the raw stream as
        an iterator of decoded messages, counted), authentication (a refusal aborts the RPC),
        and the caller's identity bound for the handler (its reset token)."""
        rpc.peer = str(context.peer())
        if codec.stream_in:
            request = _decoded(rpc, codec.decode, raw, series.name)
        else:
            rpc.bytes_in = len(raw)
            try:
                request = codec.decode(raw)
            except DecodeError as exc:
                rpc.identity, undecoded = self._undecodable(series, context, exc)
                await context.abort(*undecoded)
            rpc.namespace = _namespace_of(request)
        if self._checks(series):
            rpc.identity, refused = self._admit(series.method, rpc.namespace, context)
            if refused is not None:
                await context.abort(*refused)
        return request, _bind(rpc.identity)

    def _unary_unary(self, series: _MethodSeries, codec: _MessageCodec, behavior: Any) -> Any:
        """The hot path (every lookup): the wrapper of a unary-unary method keeps what it
        observes in locals, and calls nothing but the handler, the codec and :meth:`_finish`
        (and :meth:`_admit` when calls are authenticated): every Python call costs a small
        lookup ~1 % of its CPU time on this path (issue 5)."""
        decode = codec.decode
        encode = codec.encode
        checks = self._checks(series)
        method = series.method
        admit = self._admit
        undecodable = self._undecodable
        finish = self._finish

        async def wrapped(raw: Any, context: Any) -> Any:
            started = perf_counter()
            peer = str(context.peer())
            bytes_out = 0
            namespace = ""
            identity = ANONYMOUS
            error: BaseException | None = None
            token = None
            try:
                try:
                    request = decode(raw)
                except DecodeError as exc:
                    identity, undecoded = undecodable(series, context, exc)
                    await context.abort(*undecoded)
                namespace = str(getattr(request, "namespace", ""))
                if checks:
                    identity, refused = admit(method, namespace, context)
                    if refused is not None:
                        await context.abort(*refused)
                if identity is not current_identity():
                    token = set_identity(identity)
                response = await behavior(request, context)
                if response is None:  # gRPC discards it when the handler set an error code
                    return None
                encoded = encode(response)
                bytes_out = len(encoded)
                return encoded
            except BaseException as exc:
                error = exc
                raise
            finally:
                if token is not None:
                    reset_identity(token)
                finish(
                    series,
                    context,
                    error,
                    started=started,
                    bytes_in=len(raw),
                    bytes_out=bytes_out,
                    namespace=namespace,
                    peer=peer,
                    identity=identity,
                )

        return wrapped

    def _stream_unary(self, series: _MethodSeries, codec: _MessageCodec, behavior: Any) -> Any:
        async def wrapped(raw: Any, context: Any) -> Any:
            rpc = _Rpc(started=perf_counter())
            error: BaseException | None = None
            token = None
            try:
                request, token = await self._enter(series, codec, rpc, raw, context)
                response = await behavior(request, context)
                if response is None:  # gRPC discards it when the handler set an error code
                    return None
                encoded = codec.encode(response)
                rpc.bytes_out = len(encoded)
                return encoded
            except BaseException as exc:
                error = exc
                raise
            finally:
                if token is not None:
                    reset_identity(token)
                self._finish_rpc(series, rpc, context, error)

        return wrapped

    def _streaming(self, series: _MethodSeries, codec: _MessageCodec, behavior: Any) -> Any:
        async def wrapped(raw: Any, context: Any) -> AsyncIterator[Any]:
            rpc = _Rpc(started=perf_counter())
            error: BaseException | None = None
            token = None
            encode = codec.encode
            try:
                request, token = await self._enter(series, codec, rpc, raw, context)
                async for response in behavior(request, context):
                    encoded = encode(response)
                    rpc.bytes_out += len(encoded)
                    yield encoded
            except BaseException as exc:
                error = exc
                raise
            finally:
                self._finish_rpc(series, rpc, context, error)
                if token is not None:
                    # A stream the client abandoned is closed (GeneratorExit) by a finalizer
                    # in another context, where the token cannot be reset: nothing to undo.
                    with contextlib.suppress(ValueError):
                        reset_identity(token)

        return wrapped

    def _writing(self, series: _MethodSeries, codec: _MessageCodec, behavior: Any) -> Any:
        """A response-streaming handler that writes with ``context.write``: its responses are
        encoded (and counted, through :data:`_WRITING`) by the method's response serializer."""

        async def wrapped(raw: Any, context: Any) -> None:
            rpc = _Rpc(started=perf_counter())
            error: BaseException | None = None
            token = None
            writing = None
            try:
                request, token = await self._enter(series, codec, rpc, raw, context)
                writing = _WRITING.set(rpc)
                await behavior(request, context)
            except BaseException as exc:
                error = exc
                raise
            finally:
                if writing is not None:
                    _WRITING.reset(writing)
                if token is not None:
                    reset_identity(token)
                self._finish_rpc(series, rpc, context, error)

        return wrapped

    def _finish_rpc(
        self, series: _MethodSeries, rpc: _Rpc, context: Any, error: BaseException | None
    ) -> None:
        self._finish(
            series,
            context,
            error,
            started=rpc.started,
            bytes_in=rpc.bytes_in,
            bytes_out=rpc.bytes_out,
            namespace=rpc.namespace,
            peer=rpc.peer,
            identity=rpc.identity,
        )

    def _finish(
        self,
        series: _MethodSeries,
        context: Any,
        error: BaseException | None,
        *,
        started: float,
        bytes_in: int,
        bytes_out: int,
        namespace: str,
        peer: str,
        identity: Identity,
    ) -> None:
        """Count, time and log one RPC that ended (with ``error``, or None)."""
        duration = perf_counter() - started
        status = context.code()  # None unless the handler set one (an abort, or set_code())
        if status is None and error is None:
            code = _OK  # and no hashing of an enum (a Python call)
            by_code = series.ok or series.add_code(code)
        else:
            code = _STATUS_OF_CODE.get(status) or _code_of_error(error)
            by_code = series.by_code.get(code) or series.add_code(code)
        by_code.rpcs.inc()
        by_code.latency.observe(duration)
        series.bytes_in.inc(bytes_in)
        series.bytes_out.inc(bytes_out)
        if code is grpc.StatusCode.UNAVAILABLE:
            self._metrics.storage_errors.inc()
        _log.rpc(
            method=series.name,
            code=by_code.name,
            duration_ms=round(duration * 1000, 3),
            bytes_in=bytes_in,
            bytes_out=bytes_out,
            namespace=namespace,
            peer=peer,
            identity=identity.name,
        )


def _namespace_of(request: Any) -> str:
    """The namespace a streaming call names: its own field, or its action's (``Execute``)."""
    namespace = getattr(request, "namespace", None)
    if namespace is None:
        action = getattr(request, "action", None)
        namespace = getattr(action, "namespace", "")
    return str(namespace)


def _decoded(
    rpc: _Rpc, decode: _Codec, requests: AsyncIterator[Any], method: str
) -> AsyncIterator[Any]:
    async def decoded() -> AsyncIterator[Any]:
        number = 0
        async for raw in requests:
            rpc.bytes_in += len(raw)
            number += 1
            try:
                message = decode(raw)
            except DecodeError as exc:
                raise InvalidRequestError(
                    f"{method}: message {number} of the stream is not a valid message ({exc})"
                ) from None
            yield message

    return decoded()


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
