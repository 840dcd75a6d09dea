"""Domain errors of the cache service, raised by :mod:`.cas` and :mod:`.manifests`.

Spec coverage:
* RC-004 — :class:`CorruptBlobError` (stored bytes found corrupt).
* RC-005 — :class:`MissingBlobsError` (a manifest referencing absent blobs).
* SEC-004 — :class:`ManifestConflictError` (a different manifest exists).
* SVC-006 — :class:`LimitExceededError` (a configured limit).
* RX-002 — :class:`MissingBlobsError` (an action's input blobs are not stored yet).
* RX-006 — :class:`ExecutionNotFoundError` (an execution id not in flight).
Out of scope: the mapping onto gRPC status codes (``cache_service.servicers._status``).
"""

from __future__ import annotations

from hazremote.errors import HazError

__all__ = [
    "BlobAbsentError",
    "CacheServiceError",
    "ClientIdleError",
    "CorruptBlobError",
    "ExecutionNotFoundError",
    "InvalidRequestError",
    "LimitExceededError",
    "ManifestConflictError",
    "MissingBlobsError",
]


class CacheServiceError(HazError):
    """Root of the errors a request can end in that are not storage failures (the project's
    one root is :class:`~hazremote.errors.HazError`)."""


class InvalidRequestError(CacheServiceError):
    """The request is malformed: a digest of the wrong length, a bad namespace … (400)."""


class ClientIdleError(CacheServiceError):
    """A streaming client sent nothing for the stream idle timeout (``DEADLINE_EXCEEDED``:
    the client's fault, issue 13)."""


class LimitExceededError(CacheServiceError):
    """A configured limit (SVC-006) was exceeded; the message names the limit and its value."""


class BlobAbsentError(CacheServiceError):
    """A blob read named a blob the store does not hold."""


class CorruptBlobError(CacheServiceError):
    """Stored bytes did not match their digest (RC-004); they have been deleted."""


class MissingBlobsError(CacheServiceError):
    """RC-005: a manifest references blobs the store does not hold; RX-002: an action's
    input blobs are not all stored."""


class ManifestConflictError(CacheServiceError):
    """SEC-004: a different manifest is already stored under the key; it stays."""


class ExecutionNotFoundError(CacheServiceError):
    """WaitExecution or CancelExecution of an execution id that is not in flight (unknown,
    or ended)."""
