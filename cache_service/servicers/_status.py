"""The one place where errors become gRPC status codes (not a try/except per method).

Spec coverage:
* RC-004 — a write not matching its digest → ``INVALID_ARGUMENT``; corrupt bytes → ``DATA_LOSS``.
* RC-005, RX-002 — missing blobs behind a manifest or an action → ``FAILED_PRECONDITION``.
* RX-006 — an execution id not in flight → ``NOT_FOUND``.
* SEC-004 — a different manifest under the key → ``ALREADY_EXISTS``.
* SVC-006 — a limit → ``RESOURCE_EXHAUSTED``; an unexpected error → ``INTERNAL``, logged once here.
* SVC-006 — a client silent past the stream idle timeout → ``DEADLINE_EXCEEDED`` (not logged).
* RC-003 — storage failures → ``UNAVAILABLE`` (retryable; the client treats it as a miss).
Out of scope: authentication statuses (:mod:`cache_service.interceptor`).
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from cache_service.errors import (
    BlobAbsentError,
    ClientIdleError,
    CorruptBlobError,
    ExecutionNotFoundError,
    InvalidRequestError,
    LimitExceededError,
    ManifestConflictError,
    MissingBlobsError,
)
from cache_service.identity import AccessDeniedError
from cache_service.storage.base import BlobVerificationError, StorageError
from hazremote.cache.manifest import ManifestError
from hazremote.logs import get_logger

__all__ = ["CODE_NUMBERS", "maps_errors", "maps_errors_stream", "status_of"]

_log = get_logger("cache_service.errors")

#: google.rpc.Code numbers for the per-item ``status_code`` fields of batch replies.
CODE_NUMBERS: dict[grpc.StatusCode, int] = {code: code.value[0] for code in grpc.StatusCode}

# Order matters: the first matching class wins (BlobVerificationError is a StorageError).
_TABLE: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (InvalidRequestError, grpc.StatusCode.INVALID_ARGUMENT),
    (ManifestError, grpc.StatusCode.INVALID_ARGUMENT),
    (BlobVerificationError, grpc.StatusCode.INVALID_ARGUMENT),
    (LimitExceededError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (ClientIdleError, grpc.StatusCode.DEADLINE_EXCEEDED),
    (BlobAbsentError, grpc.StatusCode.NOT_FOUND),
    (ExecutionNotFoundError, grpc.StatusCode.NOT_FOUND),
    (CorruptBlobError, grpc.StatusCode.DATA_LOSS),
    (MissingBlobsError, grpc.StatusCode.FAILED_PRECONDITION),
    (ManifestConflictError, grpc.StatusCode.ALREADY_EXISTS),
    (StorageError, grpc.StatusCode.UNAVAILABLE),
    # SEC-002: what the authenticator and authorizer refuse with (AccessDeniedError first).
    (AccessDeniedError, grpc.StatusCode.PERMISSION_DENIED),
    (PermissionError, grpc.StatusCode.UNAUTHENTICATED),
)


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and message a request (or a batch item) ending in ``exc`` gets."""
    for kind, code in _TABLE:
        if isinstance(exc, kind):
            if code is grpc.StatusCode.UNAVAILABLE:
                _log.warning("storage error", error=str(exc), kind=type(exc).__name__)
                return code, f"storage unavailable: {exc}"
            return code, str(exc)
    _log.error("internal error", error=repr(exc))
    return grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}"


_S = TypeVar("_S")
_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")


def maps_errors(
    method: Callable[[_S, _Req, Any], Awaitable[_Resp]],
) -> Callable[[_S, _Req, Any], Awaitable[_Resp]]:
    """Decorate a unary-response servicer method: domain errors end the RPC with a status."""

    @functools.wraps(method)
    async def wrapper(self: _S, request: _Req, context: Any) -> _Resp:
        try:
            return await method(self, request, context)
        except Exception as exc:
            if isinstance(exc, grpc.aio.AbortError):
                raise
            code, message = status_of(exc)
            await context.abort(code, message)
            raise  # unreachable: abort raises

    return wrapper


def maps_errors_stream(
    method: Callable[[_S, _Req, Any], AsyncIterator[_Resp]],
) -> Callable[[_S, _Req, Any], AsyncIterator[_Resp]]:
    """Decorate a response-streaming servicer method (an async generator) the same way."""

    @functools.wraps(method)
    async def wrapper(self: _S, request: _Req, context: Any) -> AsyncIterator[_Resp]:
        try:
            async for item in method(self, request, context):
                yield item
        except Exception as exc:
            if isinstance(exc, grpc.aio.AbortError):
                raise
            code, message = status_of(exc)
            await context.abort(code, message)

    return wrapper
