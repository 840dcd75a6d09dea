"""Who is calling: the authenticated identity of the current RPC, and the seam that sets it.

Spec coverage:
* SEC-006 — the manifest producer comes from :func:`current_identity`, never from the client.
* SEC-002 (seam only) — an :class:`Authenticator` turns request metadata into an
  :class:`Identity` or refuses; :class:`OpenAccess` (the default, no ``--tokens``) lets every
  call in as ``anonymous``. The tokens file and its statuses arrive in a later issue as another
  ``Authenticator`` plugged into the same interceptor (:mod:`cache_service.observe`).
Out of scope: tokens, scopes, namespaces per token.
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

__all__ = ["ANONYMOUS", "Authenticator", "Identity", "OpenAccess", "current_identity"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Identity:
    """An authenticated caller: a token name, a worker id, or ``anonymous``."""

    name: str


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


class OpenAccess:
    """No tokens file: every call is ``anonymous`` and allowed."""

    def authenticate(self, *, method: str, metadata: Mapping[str, str]) -> Identity:
        del method, metadata
        return ANONYMOUS


def current_identity() -> Identity:
    """The identity of the RPC running in this task (``anonymous`` outside any RPC)."""
    return _CURRENT.get()


def set_identity(identity: Identity) -> contextvars.Token[Identity]:
    """Bind ``identity`` for the current task (the interceptor's job)."""
    return _CURRENT.set(identity)


def reset_identity(token: contextvars.Token[Identity]) -> None:
    _CURRENT.reset(token)
