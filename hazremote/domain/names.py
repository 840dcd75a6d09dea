"""Names of projects, tasks, tags, mutexes and namespaces.

Spec coverage:
* ID-001..003 — ``[A-Za-z0-9_-]``, first character alphanumeric, 1–64 bytes.
* DISC-006 — :func:`sanitize_name` turns a directory basename into a valid name.
Out of scope: uniqueness (checked by the loader, which knows every project).
"""

from __future__ import annotations

import re

__all__ = ["MAX_NAME_BYTES", "is_valid_name", "name_problem", "sanitize_name"]

MAX_NAME_BYTES = 64
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_INVALID_CHAR_RE = re.compile(r"[^A-Za-z0-9_-]")


def is_valid_name(name: str) -> bool:
    """True when ``name`` satisfies ID-001..003."""
    return _NAME_RE.fullmatch(name) is not None


def name_problem(name: str) -> str | None:
    """Explain why ``name`` is not a valid ID, or return ``None`` when it is."""
    if not name:
        return "must not be empty"
    if len(name.encode()) > MAX_NAME_BYTES:
        return f"is longer than {MAX_NAME_BYTES} bytes"
    if not (name[0].isascii() and name[0].isalnum()):
        return f"{name!r} must start with a letter or digit"
    bad = _INVALID_CHAR_RE.search(name)
    if bad is not None:
        return f"{name!r} contains {bad.group()!r}; names use only [A-Za-z0-9_-]"
    return None


def sanitize_name(raw: str) -> str:
    """Map a directory basename onto the ID alphabet (DISC-006).

    Invalid characters become ``-``; a leading non-alphanumeric run is dropped; the result
    is truncated to 64 bytes. Returns ``""`` when nothing usable is left (the caller reports it).
    """
    name = _INVALID_CHAR_RE.sub("-", raw)
    name = name.lstrip("-_")
    return name[:MAX_NAME_BYTES]
