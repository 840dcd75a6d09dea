"""Token authentication and authorization for the one access interceptor.

Spec coverage:
* SEC-002 — bearer tokens: unknown, missing or expired → ``UNAUTHENTICATED``, else the grant.
* SEC-002 — :meth:`TokenAuthority.reload` (SIGHUP) and :meth:`TokenAuthority.watch` (polling).
* SEC-003 — reads in own and read-through namespaces; writes only in own, ``read-write`` scope.
* SEC-006 — the bound identity is the token's name; tokenless callers are ``anonymous``.
* SEC-003 — blobs are shared content: any accepted caller reads, a writing grant writes.
* SEC-002 — executions need ``execute`` (never a worker token); ``Connect`` needs ``role: worker``.
* SEC-002 — a method without an entry in :data:`METHOD_ACCESS` is refused (fail closed).
Out of scope: the file format (:mod:`.tokens`), TLS (``cache_service.app``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import hashlib
import hmac
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

from cache_service.auth.tokens import TokenEntry, TokensFile, TokensFileError, load_tokens
from cache_service.identity import ANONYMOUS, AccessDeniedError, Grant, Identity
from hazremote.logs import get_logger

__all__ = ["METHOD_ACCESS", "Access", "TokenAuthority", "hash_secret"]

_log = get_logger("cache_service.auth")

#: How often :meth:`TokenAuthority.watch` looks at the file.
POLL_INTERVAL_S = 1.0


class Access(enum.Enum):
    """What a method needs."""

    #: A token is optional (``GetCapabilities``: its token fields describe the caller).
    PUBLIC = "public"
    READ_BLOBS = "read-blobs"
    WRITE_BLOBS = "write-blobs"
    READ_MANIFESTS = "read-manifests"
    WRITE_MANIFESTS = "write-manifests"
    #: Submitting a remote execution: ``execute: true`` in the action's own namespace.
    EXECUTE = "execute"
    #: Following or cancelling an execution by id: ``execute: true`` (the servicer checks
    #: the execution's namespace; the queue lets only its submitters cancel).
    FOLLOW_EXECUTION = "follow-execution"
    #: Leasing actions and publishing their results (``role: worker``).
    WORKER = "worker"


_V1 = "/haz.remote.v1."
#: Every authenticated method and what it needs; unknown methods are refused.
METHOD_ACCESS: dict[str, Access] = {
    f"{_V1}Capabilities/GetCapabilities": Access.PUBLIC,
    f"{_V1}ContentStore/FindMissingBlobs": Access.READ_BLOBS,
    f"{_V1}ContentStore/BatchReadBlobs": Access.READ_BLOBS,
    f"{_V1}ContentStore/ReadBlob": Access.READ_BLOBS,
    f"{_V1}ContentStore/BatchUpdateBlobs": Access.WRITE_BLOBS,
    f"{_V1}ContentStore/WriteBlob": Access.WRITE_BLOBS,
    f"{_V1}ManifestStore/GetManifest": Access.READ_MANIFESTS,
    f"{_V1}ManifestStore/BatchGetManifests": Access.READ_MANIFESTS,
    f"{_V1}ManifestStore/PutManifest": Access.WRITE_MANIFESTS,
    f"{_V1}Execution/Execute": Access.EXECUTE,
    f"{_V1}Execution/WaitExecution": Access.FOLLOW_EXECUTION,
    f"{_V1}Execution/CancelExecution": Access.FOLLOW_EXECUTION,
    f"{_V1}WorkerSession/Connect": Access.WORKER,
}


def hash_secret(secret: str) -> str:
    """The lowercase hex SHA-256 of a token secret (what the tokens file stores)."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def _bearer(metadata: Mapping[str, str]) -> str | None:
    """The secret of ``authorization: Bearer <secret>``; ``None`` without the header.

    Raises:
        PermissionError: the header is present but not a bearer token.
    """
    header = metadata.get("authorization")
    if header is None:
        return None
    scheme, _, secret = header.strip().partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret:
        raise PermissionError("authorization metadata must be 'Bearer <token>'")
    return secret


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class TokenAuthority:
    """The tokens file in force: authenticates callers and authorizes their calls.

    Implements both :class:`~cache_service.identity.Authenticator` and
    :class:`~cache_service.identity.Authorizer`.
    """

    def __init__(
        self,
        tokens: TokensFile,
        *,
        path: Path | None = None,
        clock: Callable[[], dt.datetime] = _utc_now,
        methods: Mapping[str, Access] = METHOD_ACCESS,
    ) -> None:
        self._tokens = tokens
        self._path = path
        self._clock = clock
        self._methods = methods
        self._signature = self._stat()
        self._reload_lock = threading.Lock()

    @classmethod
    def open(cls, path: Path, *, clock: Callable[[], dt.datetime] = _utc_now) -> TokenAuthority:
        """Load ``path`` (and remember it for reloads).

        Raises:
            TokensFileError: unreadable or invalid (exit 2 at start).
        """
        return cls(load_tokens(path), path=path, clock=clock)

    @property
    def tokens(self) -> TokensFile:
        """The tokens in force."""
        return self._tokens

    # -- Authenticator ---------------------------------------------------------------------

    def authenticate(self, *, method: str, metadata: Mapping[str, str]) -> Identity:
        """Who calls: the token's name and grant, or ``anonymous``.

        Raises:
            PermissionError: no token while anonymous access is off, an unknown token, an
                expired one, or malformed authorization metadata (``UNAUTHENTICATED``).
        """
        tokens = self._tokens  # one snapshot per call; a reload swaps the whole file
        secret = _bearer(metadata)
        if secret is None:
            if tokens.anonymous is not None:
                return Identity(name=ANONYMOUS.name, grant=tokens.anonymous)
            if self._methods.get(method) is Access.PUBLIC:
                return ANONYMOUS
            raise PermissionError("this server requires a token (authorization: Bearer ...)")
        entry = _match(tokens, hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest())
        if entry is None:
            raise PermissionError("unknown token")
        if entry.expires is not None and self._clock() >= entry.expires:
            raise PermissionError(f"token {entry.name!r} expired at {entry.expires.isoformat()}")
        return Identity(name=entry.name, grant=entry.grant)

    # -- Authorizer ------------------------------------------------------------------------

    def authorize(self, identity: Identity, *, method: str, namespace: str) -> None:
        """Allow the call or raise :class:`AccessDeniedError` (``PERMISSION_DENIED``)."""
        access = self._methods.get(method)
        if access is None:
            raise AccessDeniedError(f"{method} is not open to any token")
        if access is Access.PUBLIC:
            return
        grant = identity.grant
        if grant is None:  # only PUBLIC methods let a grant-less caller through authenticate
            raise AccessDeniedError(f"{identity.name} may not call {method}")
        who = f"token {identity.name!r}" if identity.name != ANONYMOUS.name else "anonymous"
        if access is Access.READ_BLOBS:
            return
        if access is Access.WRITE_BLOBS:
            if grant.scope == "read-write" or grant.execute or grant.role == "worker":
                return
            raise AccessDeniedError(f"{who} has read scope; uploading blobs needs read-write")
        if access is Access.READ_MANIFESTS:
            if grant.scope_for(namespace) is None:
                raise AccessDeniedError(f"{who} may not use namespace {namespace!r}")
            return
        if access is Access.WRITE_MANIFESTS:
            _require_own(grant, who, namespace)
            if grant.role == "worker":
                return  # the result of a leased action only: checked by the servicer
            if grant.scope != "read-write":
                raise AccessDeniedError(f"{who} has read scope in namespace {namespace!r}")
            return
        if access in (Access.EXECUTE, Access.FOLLOW_EXECUTION):
            if grant.role == "worker":
                raise AccessDeniedError(f"{who} is a worker token; it may not act as a client")
            if access is Access.EXECUTE:
                _require_own(grant, who, namespace)
            if not grant.execute:
                raise AccessDeniedError(f"{who} may not submit remote executions (no execute)")
            return
        if grant.role != "worker":  # Access.WORKER
            raise AccessDeniedError(f"{who} is not a worker token")

    # -- reload ----------------------------------------------------------------------------

    def _stat(self) -> tuple[int, int, int] | None:
        if self._path is None:
            return None
        try:
            st = os.stat(self._path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def reload(self) -> bool:
        """Re-read the tokens file (SIGHUP, or a change :meth:`watch` saw).

        Returns:
            True when the new tokens are in force; False when the file is invalid or
            unreadable, in which case the previous tokens stay and an error is logged.
        """
        if self._path is None:
            return False
        with self._reload_lock:
            self._signature = self._stat()
            try:
                tokens = load_tokens(self._path)
            except TokensFileError as exc:
                _log.error("tokens file rejected; keeping the previous tokens", error=str(exc))
                return False
            self._tokens = tokens
            _log.info("tokens file reloaded", path=str(self._path), tokens=len(tokens.tokens))
            return True

    def changed(self) -> bool:
        """True when the file's mtime, size or inode differ from the last load."""
        return self._path is not None and self._stat() != self._signature

    async def watch(self, interval: float = POLL_INTERVAL_S) -> None:
        """Reload whenever the file changes, until cancelled."""
        while True:
            await asyncio.sleep(interval)
            if self.changed():
                self.reload()


def _match(tokens: TokensFile, presented: bytes) -> TokenEntry | None:
    found = None
    for entry in tokens.tokens:  # no early exit: the time does not depend on which matched
        if hmac.compare_digest(entry.sha256, presented):
            found = entry
    return found


def _require_own(grant: Grant, who: str, namespace: str) -> None:
    if not grant.matches(namespace):
        raise AccessDeniedError(
            f"{who} may not write namespace {namespace!r} "
            f"(its namespaces: {', '.join(grant.namespaces)})"
        )
