"""The tokens file (``--tokens FILE``): strict parsing into frozen values.

Spec coverage:
* SEC-002 — ``anonymous:`` and ``tokens:`` entries; only the secret's SHA-256 hex is stored.
* SEC-003 — ``namespaces`` are ID-like names or ``*`` globs; ``read_through`` plain names.
* EXEC-021 — anything wrong is a :class:`TokensFileError` naming file, token and key (exit 2).
Out of scope: deciding access (:mod:`.authority`), watching the file.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from cache_service.config import ServiceConfigError
from cache_service.identity import ANONYMOUS, Grant, Scope
from hazremote.domain.names import name_problem

__all__ = ["TokenEntry", "TokensFile", "TokensFileError", "load_tokens", "parse_tokens"]

_HEX64 = re.compile(r"[0-9a-f]{64}")
_PATTERN = re.compile(r"[A-Za-z0-9_*-]{1,64}")
_TOP_KEYS = frozenset({"anonymous", "tokens"})
_TOKEN_KEYS = frozenset(
    {"name", "sha256", "namespaces", "scope", "execute", "role", "read_through", "expires"}
)
_SCOPES: tuple[Scope, ...] = ("read", "read-write")
_ROLES = ("worker",)


class TokensFileError(ServiceConfigError):
    """The tokens file is unreadable or invalid; the message names where."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenEntry:
    """One token: its name (the identity it authenticates as), the SHA-256 of its secret,
    what it may do and until when."""

    name: str
    sha256: bytes
    grant: Grant
    expires: dt.datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TokensFile:
    """A parsed tokens file; ``anonymous`` is ``None`` when anonymous access is off."""

    anonymous: Grant | None
    tokens: tuple[TokenEntry, ...]


def _patterns(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise TokensFileError(f"{where}: expected a non-empty list of namespaces")
    patterns = []
    for item in value:
        if not isinstance(item, str) or not _PATTERN.fullmatch(item):
            raise TokensFileError(
                f"{where}: {item!r} is not a namespace or glob ([A-Za-z0-9_-] and *, 1-64)"
            )
        patterns.append(item)
    return tuple(patterns)


def _names(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise TokensFileError(f"{where}: expected a list of namespaces")
    names = []
    for item in value:
        problem = name_problem(item) if isinstance(item, str) else f"{item!r} is not a string"
        if problem is not None:
            raise TokensFileError(f"{where}: namespace {problem} (no globs here)")
        names.append(str(item))
    if len(set(names)) != len(names):
        raise TokensFileError(f"{where}: lists a namespace twice")
    return tuple(names)


def _expires(value: object, where: str) -> dt.datetime:
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            raise TokensFileError(f"{where}: {value!r} is not an RFC 3339 timestamp") from None
    if not isinstance(value, dt.datetime):
        raise TokensFileError(f"{where}: expected an RFC 3339 timestamp, got {value!r}")
    if value.tzinfo is None:
        raise TokensFileError(f"{where}: {value.isoformat()} needs a time zone (e.g. Z)")
    return value


def _token(raw: object, index: int, source: str) -> TokenEntry:
    where = f"{source}: tokens[{index}]"
    if not isinstance(raw, dict):
        raise TokensFileError(f"{where}: expected a mapping")
    name = raw.get("name")
    if isinstance(name, str):
        where = f"{where} ({name})"
    unknown = sorted(str(k) for k in raw if k not in _TOKEN_KEYS)
    if unknown:
        known = ", ".join(sorted(_TOKEN_KEYS))
        raise TokensFileError(f"{where}: unknown key {unknown[0]!r} (known: {known})")
    for required in ("name", "sha256", "namespaces"):
        if required not in raw:
            raise TokensFileError(f"{where}: missing {required!r}")
    problem = name_problem(name) if isinstance(name, str) else f"{name!r} is not a string"
    if problem is not None:
        raise TokensFileError(f"{where}: name {problem}")
    if name == ANONYMOUS.name:
        raise TokensFileError(f"{where}: name 'anonymous' is reserved for tokenless callers")
    digest = raw["sha256"]
    if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
        raise TokensFileError(
            f"{where}: sha256: expected 64 lowercase hex digits (the SHA-256 of the secret)"
        )
    scope = raw.get("scope", "read")
    if scope not in _SCOPES:
        raise TokensFileError(f"{where}: scope: expected read or read-write, got {scope!r}")
    execute = raw.get("execute", False)
    if not isinstance(execute, bool):
        raise TokensFileError(f"{where}: execute: expected true or false, got {execute!r}")
    role = raw.get("role")
    if role is not None and role not in _ROLES:
        raise TokensFileError(f"{where}: role: expected worker, got {role!r}")
    grant = Grant(
        namespaces=_patterns(raw["namespaces"], f"{where}: namespaces"),
        scope=scope,
        read_through=_names(raw.get("read_through", []), f"{where}: read_through"),
        execute=execute,
        role=role,
    )
    expires = raw.get("expires")
    return TokenEntry(
        name=str(name),
        sha256=bytes.fromhex(digest),
        grant=grant,
        expires=None if expires is None else _expires(expires, f"{where}: expires"),
    )


def _anonymous(value: object, source: str) -> Grant | None:
    where = f"{source}: anonymous"
    if value is None or value == "none":
        return None
    if not isinstance(value, dict):
        raise TokensFileError(f"{where}: expected none or {{namespaces: [...]}}")
    unknown = sorted(str(k) for k in value if k != "namespaces")
    if unknown:
        raise TokensFileError(f"{where}: unknown key {unknown[0]!r} (known: namespaces)")
    if "namespaces" not in value:
        raise TokensFileError(f"{where}: missing 'namespaces'")
    return Grant(namespaces=_patterns(value["namespaces"], f"{where}: namespaces"), scope="read")


def parse_tokens(text: str, *, source: str) -> TokensFile:
    """Parse a tokens file's text strictly.

    Args:
        text: The YAML document.
        source: Where it came from, for messages (the path).

    Raises:
        TokensFileError: naming the token and key at fault.
    """
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise TokensFileError(f"{source}: invalid YAML: {exc}") from None
    if not isinstance(document, dict):
        raise TokensFileError(f"{source}: expected a mapping with anonymous and tokens")
    unknown = sorted(str(k) for k in document if k not in _TOP_KEYS)
    if unknown:
        raise TokensFileError(f"{source}: unknown key {unknown[0]!r} (known: anonymous, tokens)")
    raw_tokens = document.get("tokens")
    if raw_tokens is None:
        raw_tokens = []
    if not isinstance(raw_tokens, list):
        raise TokensFileError(f"{source}: tokens: expected a list")
    tokens = tuple(_token(raw, i, source) for i, raw in enumerate(raw_tokens))
    names: set[str] = set()
    hashes: set[bytes] = set()
    for entry in tokens:
        if entry.name in names:
            raise TokensFileError(f"{source}: token name {entry.name!r} appears twice")
        if entry.sha256 in hashes:
            raise TokensFileError(
                f"{source}: token {entry.name!r} has the same sha256 as an earlier token"
            )
        names.add(entry.name)
        hashes.add(entry.sha256)
    return TokensFile(anonymous=_anonymous(document.get("anonymous"), source), tokens=tokens)


def load_tokens(path: Path) -> TokensFile:
    """Read and parse ``path``.

    Raises:
        TokensFileError: unreadable or invalid.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else str(exc)
        raise TokensFileError(f"{path}: cannot read tokens file: {reason}") from None
    return parse_tokens(text, source=str(path))
