"""Filter expressions of ``haz query`` (``--tags``, ``--projects``, ``--tasks``).

Spec coverage:
* ``haz query`` (§5) — ``!``, ``&``, ``|`` in that precedence, parentheses, ``*`` wildcards.
* ID-001..003 — names are ID characters; a bare name holds when any element of a set matches.
* EXEC-021 — a malformed expression is a UsageError (exit 2) naming the 1-based column.
Out of scope: which names an expression is applied to (``hazremote.cli.query``).

``str()`` of a filter is its canonical spelling: operands of ``&``/``|`` are flattened,
parentheses appear only where precedence needs them, and parsing it gives an equal filter.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Collection
from dataclasses import dataclass
from functools import lru_cache

from hazremote.errors import UsageError

__all__ = [
    "AllOf",
    "AnyOf",
    "Filter",
    "NameFilter",
    "Not",
    "parse_filter",
]

_NAME_RE = re.compile(r"[A-Za-z0-9_*-]+")
_MAX_DEPTH = 100  # nesting deeper than this is surely a mistake, and would exhaust the stack


class Filter(abc.ABC):
    """A filter expression; subclasses are frozen values compared structurally."""

    __slots__ = ()

    @abc.abstractmethod
    def matches(self, names: Collection[str]) -> bool:
        """True when the expression holds over the set ``names``."""

    @abc.abstractmethod
    def __str__(self) -> str: ...


@lru_cache(maxsize=1024)
def _wildcard(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.DOTALL)


@dataclass(frozen=True, slots=True)
class NameFilter(Filter):
    """A name or wildcard pattern; holds when any element of the set matches it."""

    pattern: str

    def __post_init__(self) -> None:
        if _NAME_RE.fullmatch(self.pattern) is None:
            raise ValueError(f"invalid name pattern {self.pattern!r}")

    def matches(self, names: Collection[str]) -> bool:
        if "*" not in self.pattern:
            return self.pattern in names
        regex = _wildcard(self.pattern)
        return any(regex.fullmatch(name) is not None for name in names)

    def __str__(self) -> str:
        return self.pattern


@dataclass(frozen=True, slots=True)
class Not(Filter):
    """``!operand``."""

    operand: Filter

    def matches(self, names: Collection[str]) -> bool:
        return not self.operand.matches(names)

    def __str__(self) -> str:
        inner = str(self.operand)
        return f"!({inner})" if isinstance(self.operand, AllOf | AnyOf) else f"!{inner}"


def _flatten(kind: type[AllOf | AnyOf], operands: tuple[Filter, ...]) -> tuple[Filter, ...]:
    flat: list[Filter] = []
    for operand in operands:
        flat.extend(operand.operands if isinstance(operand, kind) else (operand,))
    return tuple(flat)


@dataclass(frozen=True, slots=True)
class AllOf(Filter):
    """``a & b & …`` — at least two operands, none of them an :class:`AllOf` (use :meth:`of`)."""

    operands: tuple[Filter, ...]

    def __post_init__(self) -> None:
        if len(self.operands) < 2 or any(isinstance(o, AllOf) for o in self.operands):
            raise ValueError("AllOf needs two or more operands that are not AllOf; use AllOf.of")

    @staticmethod
    def of(*operands: Filter) -> Filter:
        """The conjunction of ``operands``, flattened; a single operand is returned as is."""
        flat = _flatten(AllOf, operands)
        return flat[0] if len(flat) == 1 else AllOf(flat)

    def matches(self, names: Collection[str]) -> bool:
        return all(operand.matches(names) for operand in self.operands)

    def __str__(self) -> str:
        return " & ".join(
            f"({operand})" if isinstance(operand, AnyOf) else str(operand)
            for operand in self.operands
        )


@dataclass(frozen=True, slots=True)
class AnyOf(Filter):
    """``a | b | …`` — at least two operands, none of them an :class:`AnyOf` (use :meth:`of`)."""

    operands: tuple[Filter, ...]

    def __post_init__(self) -> None:
        if len(self.operands) < 2 or any(isinstance(o, AnyOf) for o in self.operands):
            raise ValueError("AnyOf needs two or more operands that are not AnyOf; use AnyOf.of")

    @staticmethod
    def of(*operands: Filter) -> Filter:
        """The disjunction of ``operands``, flattened; a single operand is returned as is."""
        flat = _flatten(AnyOf, operands)
        return flat[0] if len(flat) == 1 else AnyOf(flat)

    def matches(self, names: Collection[str]) -> bool:
        return any(operand.matches(names) for operand in self.operands)

    def __str__(self) -> str:
        return " | ".join(str(operand) for operand in self.operands)


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "name", one of "!&|()", or "end"
    text: str
    column: int  # 1-based


def _describe(token: _Token) -> str:
    return "the end of the expression" if token.kind == "end" else f"{token.text!r}"


class _Parser:
    """Recursive descent over: or := and ('|' and)*; and := not ('&' not)*;
    not := '!' not | name | '(' or ')'."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = self._tokenize(text)
        self.pos = 0
        self.depth = 0

    def fail(self, column: int, problem: str) -> UsageError:
        return UsageError(f"invalid filter expression {self.text!r}: column {column}: {problem}")

    def _tokenize(self, text: str) -> list[_Token]:
        tokens: list[_Token] = []
        i = 0
        while i < len(text):
            ch = text[i]
            if ch.isspace():
                i += 1
            elif ch in "!&|()":
                tokens.append(_Token(ch, ch, i + 1))
                i += 1
            else:
                match = _NAME_RE.match(text, i)
                if match is None:
                    raise self.fail(
                        i + 1,
                        f"unexpected character {ch!r}; names use [A-Za-z0-9_-] and the "
                        "wildcard *, operators are ! & | and parentheses",
                    )
                tokens.append(_Token("name", match.group(), i + 1))
                i = match.end()
        tokens.append(_Token("end", "", len(text) + 1))
        return tokens

    @property
    def current(self) -> _Token:
        return self.tokens[self.pos]

    def parse(self) -> Filter:
        result = self.parse_or()
        if self.current.kind != "end":
            raise self.fail(
                self.current.column,
                f"expected '&', '|' or the end of the expression but found "
                f"{_describe(self.current)}",
            )
        return result

    def parse_or(self) -> Filter:
        operands = [self.parse_and()]
        while self.current.kind == "|":
            self.pos += 1
            operands.append(self.parse_and())
        return AnyOf.of(*operands)

    def parse_and(self) -> Filter:
        operands = [self.parse_not()]
        while self.current.kind == "&":
            self.pos += 1
            operands.append(self.parse_not())
        return AllOf.of(*operands)

    def parse_not(self) -> Filter:
        token = self.current
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise self.fail(token.column, f"nested deeper than {_MAX_DEPTH} levels")
        try:
            if token.kind == "!":
                self.pos += 1
                return Not(self.parse_not())
            if token.kind == "name":
                self.pos += 1
                return NameFilter(token.text)
            if token.kind == "(":
                self.pos += 1
                inner = self.parse_or()
                if self.current.kind != ")":
                    raise self.fail(
                        self.current.column,
                        f"expected ')' to close the '(' at column {token.column} but found "
                        f"{_describe(self.current)}",
                    )
                self.pos += 1
                return inner
            raise self.fail(
                token.column, f"expected a name, '!' or '(' but found {_describe(token)}"
            )
        finally:
            self.depth -= 1


def parse_filter(text: str) -> Filter:
    """Parse a filter expression such as ``frontend & !(legacy | web-*)``.

    Raises:
        UsageError: naming the column of the first problem.
    """
    return _Parser(text).parse()
