"""Workspace paths and glob patterns.

Spec coverage:
* PATH-001..016 — path syntax and glob semantics; no ``..``, so no pattern escapes the workspace.
* DAG-013 — :attr:`PathPattern.literal_prefix` and :func:`patterns_overlap`.
Out of scope: walking the file system (``hazremote.keys``) and the input exclusions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from hazremote.errors import PatternError

__all__ = [
    "CONTROL_DIRS",
    "GLOB_CHARS",
    "PathPattern",
    "compile_glob",
    "is_glob",
    "join_workspace_path",
    "parse_pattern",
    "patterns_overlap",
    "validate_relative_path",
]

GLOB_CHARS = frozenset("*?[{")
#: PATH: directories at the workspace root that never hold inputs nor walked outputs.
CONTROL_DIRS = frozenset({".haz", ".git"})


def is_glob(text: str) -> bool:
    """PATH: a pattern is a glob when it contains any of ``* ? [ {``."""
    return any(ch in GLOB_CHARS for ch in text)


def _segments_problem(body: str) -> str | None:
    if "\x00" in body:
        return "contains a NUL byte"
    if "\\" in body:
        return "contains a backslash; paths use '/' as the only separator"
    if body == "":
        return "is empty"
    for segment in body.split("/"):
        if segment == "":
            return "has an empty segment ('//' or a trailing '/')"
        if segment in (".", ".."):
            return f"has a {segment!r} segment; '.' and '..' are not allowed (PATH)"
    return None


def validate_relative_path(text: str) -> str | None:
    """Return why ``text`` is not a valid relative directory path (``.`` allowed), or None."""
    if text == ".":
        return None
    if text.startswith("/"):
        return "must be relative to the workspace root (no leading '/')"
    return _segments_problem(text)


def join_workspace_path(project_dir: str, relative: str) -> str:
    """Workspace-absolute form (leading ``/``) of ``relative`` inside ``project_dir``."""
    return f"/{project_dir}/{relative}" if project_dir else f"/{relative}"


def _class_start(text: str, i: int) -> int:
    """Index of the first member of the class opened by ``text[i] == "["``."""
    return i + 2 if i + 1 < len(text) and text[i + 1] in "!^" else i + 1


def _class_end(text: str, i: int) -> int:
    """Index of the ``]`` closing the class opened at ``i``, or -1.

    As in POSIX globs and fnmatch, a ``]`` right after ``[`` or ``[!`` is a member.
    """
    return text.find("]", _class_start(text, i) + 1)


def _class_ranges(members: str) -> list[tuple[str, str]]:
    """The ``(low, high)`` character ranges of a class body (a single character is a range)."""
    ranges: list[tuple[str, str]] = []
    k = 0
    while k < len(members):
        if k + 2 < len(members) and members[k + 1] == "-":
            ranges.append((members[k], members[k + 2]))
            k += 3
        else:
            ranges.append((members[k], members[k]))
            k += 1
    return ranges


def _check_glob_syntax(body: str) -> str | None:
    depth = 0
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == "[":
            end = _class_end(body, i)
            if end == -1 or "/" in body[i:end]:
                return "has an unclosed '[' character class"
            for low, high in _class_ranges(body[_class_start(body, i) : end]):
                if low > high:
                    return f"has a reversed range '{low}-{high}' in a character class"
            i = end + 1
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            if depth == 0:
                return "has a '}' without a matching '{'"
            depth -= 1
        i += 1
    if depth:
        return "has an unclosed '{' alternation"
    for segment in body.split("/"):
        if "**" in segment and segment != "**" and "{" not in segment:
            return "uses '**' inside a segment; '**' must be a whole path segment"
    return None


@dataclass(frozen=True, slots=True)
class PathPattern:
    """A validated path or glob, as written and in workspace-absolute form.

    Attributes:
        text: The pattern exactly as written (including a leading ``!``); printing it and
            parsing it again gives an equal pattern.
        absolute: Workspace-absolute pattern (leading ``/``, no ``!``).
        negated: True for an input exclusion (``!src/**/*.test.ts``).
        glob: True when the pattern has glob characters.
    """

    text: str
    absolute: str
    negated: bool
    glob: bool

    def __str__(self) -> str:
        return self.text

    @property
    def literal_prefix(self) -> str:
        """Workspace-absolute segments before the first segment holding a glob character.

        For a literal path this is the path itself; ``/`` when the first segment is a glob.
        """
        return _literal_prefix(self.absolute) if self.glob else self.absolute

    def matches(self, path: str) -> bool:
        """True when the workspace-absolute file ``path`` is matched (case-sensitive)."""
        if not self.glob:
            return path == self.absolute
        prefix = self.literal_prefix
        if prefix == "/":
            return compile_glob(self.absolute).fullmatch(path) is not None
        # Match the part after the literal prefix: one compiled regex then serves the same
        # relative glob in every project (`/a/src/**` and `/b/src/**` share `/**`).
        if not path.startswith(prefix) or (len(path) > len(prefix) and path[len(prefix)] != "/"):
            return False
        rest = self.absolute[len(prefix) :]
        return compile_glob(rest).fullmatch(path[len(prefix) :]) is not None


@lru_cache(maxsize=8192)
def _literal_prefix(absolute: str) -> str:
    kept: list[str] = []
    for segment in absolute[1:].split("/"):
        if is_glob(segment):
            break
        kept.append(segment)
    return "/" + "/".join(kept)


@lru_cache(maxsize=8192)
def compile_glob(absolute: str) -> re.Pattern[str]:
    """Compiled matcher of a workspace-absolute glob (cached: patterns repeat across tasks)."""
    return re.compile(_glob_to_regex(absolute))


def parse_pattern(text: str, *, project_dir: str, allow_negation: bool = False) -> PathPattern:
    """Validate ``text`` and resolve it against ``project_dir`` ("" for the root).

    Raises:
        PatternError: naming the rule broken.
    """
    if not isinstance(text, str):
        raise PatternError(f"expected a path string, got {text!r}")
    negated = text.startswith("!")
    if negated and not allow_negation:
        raise PatternError(f"{text!r}: '!' exclusions are only allowed in inputs")
    body = text[1:] if negated else text
    absolute_in = body.startswith("/")
    rel = body[1:] if absolute_in else body
    problem = _segments_problem(rel)
    if problem is None and is_glob(rel):
        problem = _check_glob_syntax(rel)
    if problem is not None:
        raise PatternError(f"{text!r} {problem}")
    absolute = "/" + rel if absolute_in else join_workspace_path(project_dir, rel)
    return PathPattern(text=text, absolute=absolute, negated=negated, glob=is_glob(rel))


def _segments_prefix(shorter: str, longer: str) -> bool:
    if shorter == "/":
        return True
    return longer == shorter or longer.startswith(shorter + "/")


def patterns_overlap(a: PathPattern, b: PathPattern) -> bool:
    """DAG-013 overlap: equal literals, or one literal prefix is a prefix of the other's."""
    if not a.glob and not b.glob:
        return a.absolute == b.absolute
    pa, pb = a.literal_prefix, b.literal_prefix
    return _segments_prefix(pa, pb) or _segments_prefix(pb, pa)


def _split_top_level(body: str) -> list[str]:
    parts: list[str] = []
    depth = 0
    start = 0
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == "[":  # a class is one unit: a ',' or '}' inside it is a member
            i = max(i, _class_end(body, i))
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(body[start:i])
            start = i + 1
        i += 1
    parts.append(body[start:])
    return parts


def _brace_end(pattern: str, i: int) -> int:
    """Index of the ``}`` closing the alternation opened at ``i`` (classes are skipped)."""
    depth = 0
    j = i
    while j < len(pattern):
        ch = pattern[j]
        if ch == "[":
            j = max(j, _class_end(pattern, j))
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                break
        j += 1
    return j


def _glob_to_regex(pattern: str) -> str:
    """Translate a validated absolute glob into a regular expression body."""
    out: list[str] = []
    i = 0
    n = len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "*":
            is_double = pattern.startswith("**", i)
            seg_start = i == 0 or pattern[i - 1] == "/"
            seg_end = i + 2 == n or (i + 2 < n and pattern[i + 2] == "/")
            if is_double and seg_start and seg_end:
                # Zero or more whole segments. After a "/", that "/" moves into the repeated
                # group, so "a/**" matches "a" and "a/**/b" matches "a/b"; "[^/]" rather than
                # "." so that a name holding a newline still matches.
                trailing = i + 2 == n
                if out and out[-1] == "/":
                    out.pop()
                    out.append("(?:/[^/]+)*")
                    if not trailing:
                        out.append("/")
                else:
                    out.append("(?:[^/]+(?:/[^/]+)*)?" if trailing else "(?:[^/]+/)*")
                i += 2 if trailing else 3
                continue
            out.append("[^/]*")
            i += 1
        elif ch == "?":
            out.append("[^/]")
            i += 1
        elif ch == "[" and _class_end(pattern, i) != -1:
            start, end = _class_start(pattern, i), _class_end(pattern, i)
            # Escape every member so that ']', '[', '^', '&', '~', '|' and '-' stay literal
            # in the regular expression; only the ranges written in the glob become ranges.
            members = "".join(
                re.escape(low) if low == high else f"{re.escape(low)}-{re.escape(high)}"
                for low, high in _class_ranges(pattern[start:end])
            )
            negate = start == i + 2
            out.append(f"[^/{members}]" if negate else f"(?!/)[{members}]")
            i = end + 1
        elif ch == "{":
            j = _brace_end(pattern, i)
            alternatives = _split_top_level(pattern[i + 1 : j])
            out.append("(?:" + "|".join(_glob_fragment(a) for a in alternatives) + ")")
            i = j + 1
        else:
            out.append(re.escape(ch))
            i += 1
    return "".join(out)


def _glob_fragment(fragment: str) -> str:
    return _glob_to_regex(fragment) if fragment else ""
