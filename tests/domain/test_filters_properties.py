"""Property tests of ``haz query`` filter expressions (SPEC §5, QRY)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hazremote.errors import UsageError
from hazremote.graph.filters import AllOf, AnyOf, Filter, NameFilter, Not, parse_filter

_NAMES = st.from_regex(r"[A-Za-z0-9_*-]{1,8}", fullmatch=True).map(NameFilter)


def _extend(children: st.SearchStrategy[Filter]) -> st.SearchStrategy[Filter]:
    operands = st.lists(children, min_size=2, max_size=4)
    return st.one_of(
        children.map(Not),
        operands.map(lambda ops: AllOf.of(*ops)),
        operands.map(lambda ops: AnyOf.of(*ops)),
    )


FILTERS = st.recursive(_NAMES, _extend, max_leaves=12)


@given(FILTERS)
def test_canonical_spelling_round_trips(expr: Filter) -> None:
    """QRY: str() of any filter parses back to an equal filter."""
    assert parse_filter(str(expr)) == expr


@given(FILTERS, st.sets(st.sampled_from(["a", "b", "web-app", "A1", "x_y"]), max_size=4))
def test_spacing_does_not_change_meaning(expr: Filter, names: set[str]) -> None:
    """QRY: whitespace between tokens is insignificant."""
    squeezed = parse_filter(str(expr).replace(" ", ""))
    spaced_text = str(expr)
    for operator in "!&|()":
        spaced_text = spaced_text.replace(operator, f"\t {operator}\n")
    spaced = parse_filter(spaced_text)
    assert squeezed.matches(names) == expr.matches(names) == spaced.matches(names)


@given(st.text(max_size=40))
def test_random_text_raises_only_usage_error(text: str) -> None:
    """QRY, EXEC-021: arbitrary text parses (and round-trips) or raises UsageError."""
    try:
        parsed = parse_filter(text)
    except UsageError as err:
        message = str(err)
    else:
        assert parse_filter(str(parsed)) == parsed
        return
    assert message.startswith(f"invalid filter expression {text!r}: column ")


@given(st.text(alphabet="ab*!&|() ", max_size=30))
def test_operator_soup_raises_only_usage_error(text: str) -> None:
    """QRY: text dense in operators never crashes the parser."""
    try:
        parsed = parse_filter(text)
    except UsageError:
        return
    assert parse_filter(str(parsed)) == parsed
