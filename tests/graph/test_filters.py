"""``haz query`` filter expressions (SPEC §5): grammar, precedence, matching, errors."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from hazremote.errors import UsageError
from hazremote.graph.filters import AllOf, AnyOf, NameFilter, Not, parse_filter


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("web", "web"),
        ("  web  ", "web"),
        ("a&b|c", "a & b | c"),
        ("a|b&c", "a | b & c"),  # & binds tighter than |
        ("!a&b", "!a & b"),  # ! binds tighter than &
        ("!(a&b)", "!(a & b)"),
        ("!(a)", "!a"),
        ("!!a", "!!a"),
        ("(a|b)&c", "(a | b) & c"),
        ("a&(b&c)", "a & b & c"),  # same-operator groups flatten
        ("(a|b)|(c|d)", "a | b | c | d"),
        ("((((x))))", "x"),
        ("web-* | *_lib | *", "web-* | *_lib | *"),
        ("!(a|!b)&(c|d&e)", "!(a | !b) & (c | d & e)"),
    ],
)
def test_canonical_spelling(text: str, canonical: str) -> None:
    """QRY: precedence ! > & > |; str() is minimal-parenthesis canonical and parses back."""
    parsed = parse_filter(text)
    assert str(parsed) == canonical
    assert parse_filter(canonical) == parsed


def test_structure_follows_precedence() -> None:
    """QRY: ``!a & b | c`` is ``((!a) & b) | c``."""
    assert parse_filter("!a & b | c") == AnyOf(
        (AllOf((Not(NameFilter("a")), NameFilter("b"))), NameFilter("c"))
    )


@pytest.mark.parametrize(
    ("text", "names", "expected"),
    [
        ("frontend", {"frontend", "heavy"}, True),
        ("frontend", {"backend"}, False),
        ("frontend", set(), False),
        ("!frontend", set(), True),
        ("!frontend", {"heavy"}, True),
        ("!frontend", {"frontend"}, False),
        ("frontend & heavy", {"frontend", "heavy"}, True),
        ("frontend & heavy", {"frontend"}, False),
        ("frontend | heavy", {"heavy"}, True),
        ("frontend | heavy", {"lib"}, False),
        ("!a & b | c", {"c", "a"}, True),
        ("!a & b | c", {"a", "b"}, False),
        ("!(a | b)", {"c"}, True),
        ("web-*", {"web-app"}, True),
        ("web-*", {"web-"}, True),
        ("web-*", {"web"}, False),
        ("*-app", {"web-app"}, True),
        ("w*b*p", {"web-app"}, True),
        ("w*b*p", {"web-apps"}, False),
        ("*", {"x"}, True),
        ("*", set(), False),
        ("Web", {"web"}, False),  # case-sensitive, like names (ID-001)
    ],
)
def test_matches_over_a_set_of_names(text: str, names: set[str], expected: bool) -> None:
    """QRY: a bare name holds when any element matches it; ``*`` is a wildcard."""
    assert parse_filter(text).matches(names) is expected
    assert parse_filter(text).matches(tuple(sorted(names))) is expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "column 1: expected a name, '!' or '(' but found the end of the expression"),
        ("   ", "column 4: expected a name, '!' or '(' but found the end of the expression"),
        ("a b", "column 3: expected '&', '|' or the end of the expression but found 'b'"),
        ("a &", "column 4: expected a name, '!' or '(' but found the end of the expression"),
        ("a & | b", "column 5: expected a name, '!' or '(' but found '|'"),
        (
            "(a | b",
            "column 7: expected ')' to close the '(' at column 1 but found the end of the "
            "expression",
        ),
        ("a)", "column 2: expected '&', '|' or the end of the expression but found ')'"),
        ("()", "column 2: expected a name, '!' or '(' but found ')'"),
        ("a !b", "column 3: expected '&', '|' or the end of the expression but found '!'"),
        (
            "web.app",
            "column 4: unexpected character '.'; names use [A-Za-z0-9_-] and the wildcard *, "
            "operators are ! & | and parentheses",
        ),
        (
            "a && b",
            "column 4: expected a name, '!' or '(' but found '&'",
        ),
        ("(" * 300 + "a" + ")" * 300, "column 101: nested deeper than 100 levels"),
    ],
)
def test_malformed_expressions_name_the_column(text: str, message: str) -> None:
    """QRY, EXEC-021: a UsageError (exit 2) quoting the expression and the 1-based column."""
    with pytest.raises(UsageError) as caught:
        parse_filter(text)
    assert str(caught.value) == f"invalid filter expression {text!r}: {message}"
    assert caught.value.exit_code == 2


@pytest.mark.parametrize(
    "build",
    [
        lambda: AllOf((NameFilter("a"),)),
        lambda: AllOf((NameFilter("a"), AllOf((NameFilter("b"), NameFilter("c"))))),
        lambda: AnyOf((NameFilter("a"), AnyOf((NameFilter("b"), NameFilter("c"))))),
        lambda: NameFilter("a b"),
        lambda: NameFilter(""),
    ],
)
def test_non_canonical_values_cannot_be_constructed(build: Callable[[], object]) -> None:
    """QRY: only canonical trees exist, so structural equality is semantic identity of text."""
    with pytest.raises(ValueError):  # noqa: PT011 - the message is incidental here
        build()


def test_of_constructors_flatten() -> None:
    """QRY: AllOf.of / AnyOf.of flatten nested groups and unwrap single operands."""
    a, b, c = NameFilter("a"), NameFilter("b"), NameFilter("c")
    assert AllOf.of(a) == a
    assert AllOf.of(a, AllOf.of(b, c)) == AllOf((a, b, c))
    assert AnyOf.of(AnyOf.of(a, b), c) == AnyOf((a, b, c))
    assert AnyOf.of(AllOf.of(a, b), c) == AnyOf((AllOf((a, b)), c))
