"""Who is calling: the authenticated identity of the current RPC, and the seam that sets it.

Spec coverage:
* SEC-006 — the manifest producer comes from :func:`current_identity`, never from the client.
* SEC-002 — an :class:`Authenticator` turns metadata into an :class:`Identity` or refuses.
* SEC-002/003 — an identity carries its token's :class:`Grant`; an :class:`Authorizer` refuses.
Out of scope: parsing tokens, deciding access (both :mod:`cache_service.auth`).
"""

from __future__ import annotations

import contextvars
import fnmatch
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

__all__ = [
    "ANONYMOUS",
    "AccessDeniedError",
    "Authenticator",
    "Authorizer",
    "Grant",
    "Identity",
    "OpenAccess",
    "Scope",
    "current_identity",
]

Scope = Literal["read", "read-write"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Grant:
    """What a token (or anonymous access) may do (SEC-002/003)."""

    #: Namespace patterns it may use (``*`` globs, e.g. ``pr-*``).
    namespaces: tuple[str, ...]
    scope: Scope = "read"
    #: Namespaces a lookup continues in after a miss, in order; readable, never writable.
    read_through: tuple[str, ...] = ()
    execute: bool = False
    #: ``"worker"``: may lease actions and publish their results.
    role: str | None = None

    def matches(self, namespace: str) -> bool:
        """True when ``namespace`` is one of the token's own namespaces."""
        return any(fnmatch.fnmatchcase(namespace, p) for p in self.namespaces)

    def scope_for(self, namespace: str) -> Scope | None:
        """The scope in ``namespace``: its own scope in its namespaces, ``read`` in its
        read-through namespaces, ``None`` elsewhere."""
        if self.matches(namespace):
            return self.scope
        if namespace in self.read_through:
            return "read"
        return None

    def lookup_chain(self, namespace: str) -> tuple[str, ...]:
        """SEC-003: where a lookup in ``namespace`` looks, in order."""
        return (namespace, *(ns for ns in self.read_through if ns != namespace))


@dataclass(frozen=True, slots=True, kw_only=True)
class Identity:
    """An authenticated caller: a token name, a worker id, or ``anonymous``."""

    name: str
    #: What it may do; ``None`` when access is open (no tokens file) or not established.
    grant: Grant | None = None


class AccessDeniedError(PermissionError):
    """A known caller may not do this (``PERMISSION_DENIED``); any other
    :class:`PermissionError` from the seam means the caller is not known
    (``UNAUTHENTICATED``)."""


ANONYMOUS = Identity(name="anonymous")

_CURRENT: contextvars.ContextVar[Identity] = contextvars.ContextVar(
    "haz_cache_identity", default=ANONYMOUS
)


class Authenticator(Protocol):
    """Decides who a call comes from (SEC-002)."""

    def authenticate(self, *, method: str, metadata: Mapping[str, str]) -> Identity:
        """The caller's identity.

        Raises:
            PermissionError: the call must be refused (mapped to ``UNAUTHENTICATED``).
        """
        ...


@runtime_checkable
class Authorizer(Protocol):
    """Decides whether an authenticated caller may make a call (SEC-002/003)."""

    def authorize(self, identity: Identity, *, method: str, namespace: str) -> None:
        """Return when allowed.

        Raises:
            AccessDeniedError: the caller may not (``PERMISSION_DENIED``).
        """
        ...


class OpenAccess:
    """No tokens file: every call is ``anonymous`` and allowed."""

    def authenticate(self, *, method: str, metadata: Mapping[str, str]) -> Identity:
        del method, metadata
        return ANONYMOUS


# The context variable's own methods, not functions around them: every RPC calls them
# (issue 5: a Python call costs a small lookup ~1 % of its CPU time).

#: ``current_identity()``: the identity of the RPC running in this task (``anonymous``
#: outside any RPC).
current_identity: Callable[[], Identity] = _CURRENT.get

#: ``set_identity(identity)``: bind ``identity`` for the current task (the interceptor's
#: job); returns the token that :func:`reset_identity` takes.
set_identity: Callable[[Identity], contextvars.Token[Identity]] = _CURRENT.set

#: ``reset_identity(token)``: undo a :func:`set_identity`.
reset_identity: Callable[[contextvars.Token[Identity]], None] = _CURRENT.reset
