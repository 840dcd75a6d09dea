"""Workspace paths and glob patterns.

Spec coverage:
* PATH-001..016 — ``/`` separators; a leading ``/`` means workspace-absolute, otherwise
  project-relative; no empty, ``.`` or ``..`` segments, no NUL, no backslash; a pattern
  containing any of ``* ? [ {`` is a glob; ``*`` does not cross ``/`` and matches dotfiles;
  ``**`` is a whole segment matching zero or more segments; ``{a,b}`` alternates (nesting
  allowed); ``[abc]``/``[!abc]`` classes; matching is case-sensitive; a leading ``!`` negates an
  input pattern. Because ``..`` is never allowed, no valid pattern can escape the workspace.
* DAG-013 — :attr:`PathPattern.literal_prefix` and :func:`patterns_overlap` give the
  producer-edge relation.
Out of scope: walking the file system (``hazremote.keys`` resolves patterns against disk) and
the exclusion of ``.haz/``/``.git/`` and own outputs, which is a property of input resolution.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from hazremote.errors import PatternError

__all__ = [
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


def _check_glob_syntax(body: str) -> str | None:
    depth = 0
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == "[":
            end = body.find("]", i + 2 if i + 1 < len(body) and body[i + 1] in "!^" else i + 1)
            if end == -1 or "/" in body[i:end]:
                return "has an unclosed '[' character class"
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
        return compile_glob(self.absolute).fullmatch(path) is not None


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
    for i, ch in enumerate(body):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(body[start:i])
            start = i + 1
    parts.append(body[start:])
    return parts


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
                if i + 2 == n:
                    # trailing "/**": zero or more segments after the prefix
                    if out and out[-1] == "/":
                        out.pop()
                        out.append("(?:/.*)?")
                    else:
                        out.append(".*")
                    i += 2
                else:
                    # "**/" : zero or more whole segments
                    out.append("(?:[^/]+/)*")
                    i += 3
                continue
            out.append("[^/]*")
            i += 1
        elif ch == "?":
            out.append("[^/]")
            i += 1
        elif ch == "[":
            j = i + 1
            negate = j < n and pattern[j] in "!^"
            if negate:
                j += 1
            end = pattern.index("]", j + 1 if j < n and pattern[j] == "]" else j)
            inner = pattern[j:end].replace("\\", "\\\\")
            out.append(f"[{'^/' if negate else ''}{inner}]" if negate else f"(?!/)[{inner}]")
            i = end + 1
        elif ch == "{":
            depth = 0
            j = i
            while j < n:
                if pattern[j] == "{":
                    depth += 1
                elif pattern[j] == "}":
                    depth -= 1
                    if depth == 0:
                        break
                j += 1
            alternatives = _split_top_level(pattern[i + 1 : j])
            out.append("(?:" + "|".join(_glob_fragment(a) for a in alternatives) + ")")
            i = j + 1
        else:
            out.append(re.escape(ch))
            i += 1
    return "".join(out)


def _glob_fragment(fragment: str) -> str:
    return _glob_to_regex(fragment) if fragment else ""
