"""Tokens, namespaces and read-through: the tokens file and the :class:`TokenAuthority`.

Spec coverage:
* SEC-002, SEC-003, SEC-006 — see :mod:`.tokens` and :mod:`.authority`.
Out of scope: TLS (``cache_service.app``).
"""

from cache_service.auth.authority import METHOD_ACCESS, Access, TokenAuthority, hash_secret
from cache_service.auth.tokens import (
    TokenEntry,
    TokensFile,
    TokensFileError,
    load_tokens,
    parse_tokens,
)

__all__ = [
    "METHOD_ACCESS",
    "Access",
    "TokenAuthority",
    "TokenEntry",
    "TokensFile",
    "TokensFileError",
    "hash_secret",
    "load_tokens",
    "parse_tokens",
]
