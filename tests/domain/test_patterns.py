"""Paths and glob patterns (PATH-001..016, DAG-013): table-driven and property tests."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from hazremote.domain.patterns import PathPattern, parse_pattern, patterns_overlap
from hazremote.errors import PatternError

# --- a reference matcher for '*', '?' and '**', written from the rules, segment by segment ---


def _segment_matches(pattern: str, text: str) -> bool:
    """'*' matches any run of characters, '?' exactly one; both stay inside the segment."""
    if not pattern:
        return not text
    head = pattern[0]
    if head == "*":
        return any(_segment_matches(pattern[1:], text[i:]) for i in range(len(text) + 1))
    if not text:
        return False
    return (head in ("?", text[0])) and _segment_matches(pattern[1:], text[1:])


def _path_matches(pattern: list[str], path: list[str]) -> bool:
    """'**' matches zero or more whole segments; other segments match one segment each."""
    if not pattern:
        return not path
    if pattern[0] == "**":
        return any(_path_matches(pattern[1:], path[i:]) for i in range(len(path) + 1))
    return (
        bool(path)
        and _segment_matches(pattern[0], path[0])
        and _path_matches(pattern[1:], path[1:])
    )


_PLAIN_SEGMENT = st.text(alphabet="ab.*?", min_size=1, max_size=4).filter(
    lambda s: s not in (".", "..") and "**" not in s
)
_GLOB_SEGMENTS = st.lists(st.one_of(_PLAIN_SEGMENT, st.just("**")), min_size=1, max_size=5)
_PATH_SEGMENTS = st.lists(
    st.text(alphabet="ab.\n*", min_size=1, max_size=3).filter(lambda s: s not in (".", "..")),
    min_size=1,  # a file path has at least one segment
    max_size=5,
)


@given(pattern=_GLOB_SEGMENTS, path=_PATH_SEGMENTS)
def test_glob_matching_agrees_with_the_reference_matcher(
    pattern: list[str], path: list[str]
) -> None:
    """PATH: '*' and '?' do not cross '/', match dotfiles; '**' is zero or more segments."""
    parsed = parse_pattern("/".join(pattern), project_dir="")
    assert parsed.matches("/" + "/".join(path)) == _path_matches(pattern, path)


@given(pattern=_GLOB_SEGMENTS, path=_PATH_SEGMENTS, project=st.sampled_from(["", "p", "p/q"]))
def test_project_relative_globs_match_under_the_project(
    pattern: list[str], path: list[str], project: str
) -> None:
    """PATH: a relative pattern is anchored at its project's directory."""
    parsed = parse_pattern("/".join(pattern), project_dir=project)
    full = [*(project.split("/") if project else []), *path]
    assert parsed.matches("/" + "/".join(full)) == _path_matches(pattern, path)


# --- round trip and robustness ----------------------------------------------------------------

_RICH_SEGMENT = st.one_of(
    _PLAIN_SEGMENT,
    st.just("**"),
    st.sampled_from(["[ab]", "[!a]", "[a-c]x", "{a,b}", "{x,{y,z}}", "*.{js,map}", "v[0-9]"]),
)


@st.composite
def valid_pattern_texts(draw: st.DrawFn) -> str:
    body = "/".join(draw(st.lists(_RICH_SEGMENT, min_size=1, max_size=5)))
    return draw(st.sampled_from(["", "/", "!", "!/"])) + body


@given(text=valid_pattern_texts(), project=st.sampled_from(["", "web", "packages/web"]))
def test_valid_patterns_round_trip(text: str, project: str) -> None:
    """PATH-001..016: printing a pattern and parsing it again gives an equal pattern."""
    pattern = parse_pattern(text, project_dir=project, allow_negation=True)
    assert parse_pattern(pattern.text, project_dir=project, allow_negation=True) == pattern
    assert str(pattern) == text
    assert pattern.negated == text.startswith("!")
    assert pattern.absolute.startswith("/")
    # The absolute form denotes the same files from anywhere.
    again = parse_pattern(pattern.absolute, project_dir="elsewhere")
    assert (again.absolute, again.glob) == (pattern.absolute, pattern.glob)
    pattern.matches("/packages/web/a")  # compiles


@given(text=st.text(max_size=40), negation=st.booleans())
def test_random_text_raises_only_pattern_error(text: str, negation: bool) -> None:
    """PATH-001..016: arbitrary text is accepted or rejected with PatternError, never crashes;
    an accepted pattern can be matched."""
    try:
        pattern = parse_pattern(text, project_dir="p", allow_negation=negation)
    except PatternError:
        return
    pattern.matches("/p/a/b")


@given(text=st.text(alphabet="ab/*?[]{},!^-.\\", max_size=14), path=_PATH_SEGMENTS)
# Regressions found by this test: an empty class used to pass validation and then crash the
# matcher; a reversed range, or a class inside braces holding '}' or ',', too.
@example(text="[]", path=["a"])
@example(text="[!]", path=["a"])
@example(text="[b-a]", path=["a"])
@example(text="{a,[}]}", path=["}"])
@example(text="{[,]}", path=[","])
def test_glob_syntax_soup_raises_only_pattern_error(text: str, path: list[str]) -> None:
    """PATH: text dense in glob syntax is rejected with PatternError or compiles and matches."""
    try:
        pattern = parse_pattern(text, project_dir="", allow_negation=True)
    except PatternError:
        return
    assert isinstance(pattern.matches("/" + "/".join(path)), bool)


# --- tables -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "'' is empty"),
        ("/", "'/' is empty"),
        ("a//b", "'a//b' has an empty segment ('//' or a trailing '/')"),
        ("a/", "'a/' has an empty segment ('//' or a trailing '/')"),
        ("./a", "'./a' has a '.' segment; '.' and '..' are not allowed (PATH)"),
        ("a/../../etc", "'a/../../etc' has a '..' segment; '.' and '..' are not allowed (PATH)"),
        ("a\\b", "'a\\\\b' contains a backslash; paths use '/' as the only separator"),
        ("a\x00b", "'a\\x00b' contains a NUL byte"),
        ("a/[bc", "'a/[bc' has an unclosed '[' character class"),
        ("a/{b,c", "'a/{b,c' has an unclosed '{' alternation"),
        ("a/{b}}", "'a/{b}}' has a '}' without a matching '{'"),
        ("a/[]", "'a/[]' has an unclosed '[' character class"),
        ("a/[!]", "'a/[!]' has an unclosed '[' character class"),
        ("a/[b/c]", "'a/[b/c]' has an unclosed '[' character class"),
        ("a/[z-a]", "'a/[z-a]' has a reversed range 'z-a' in a character class"),
        ("a/**b", "'a/**b' uses '**' inside a segment; '**' must be a whole path segment"),
        ("!a", "'!a': '!' exclusions are only allowed in inputs"),
    ],
)
def test_invalid_patterns_are_explained(text: str, message: str) -> None:
    """PATH-001..016: each rejected form names the rule it breaks."""
    with pytest.raises(PatternError) as caught:
        parse_pattern(text, project_dir="p")
    assert str(caught.value) == message
    assert caught.value.exit_code == 2


@pytest.mark.parametrize(
    ("text", "project", "absolute", "prefix", "glob"),
    [
        ("src/a.ts", "web", "/web/src/a.ts", "/web/src/a.ts", False),
        ("src/**/*.ts", "web", "/web/src/**/*.ts", "/web/src", True),
        ("/shared/x.json", "web", "/shared/x.json", "/shared/x.json", False),
        ("*.md", "", "/*.md", "/", True),
        ("a/b{c,d}/e", "p", "/p/a/b{c,d}/e", "/p/a", True),
        ("a/[xy]/e", "p", "/p/a/[xy]/e", "/p/a", True),
    ],
)
def test_absolute_form_and_literal_prefix(
    text: str, project: str, absolute: str, prefix: str, glob: bool
) -> None:
    """PATH, DAG-013: workspace-absolute form and the segments before the first glob."""
    pattern = parse_pattern(text, project_dir=project)
    assert (pattern.absolute, pattern.literal_prefix, pattern.glob) == (absolute, prefix, glob)


@pytest.mark.parametrize(
    ("pattern", "path", "matched"),
    [
        ("src/*.ts", "/p/src/a.ts", True),
        ("src/*.ts", "/p/src/.hidden.ts", True),  # '*' matches dotfiles
        ("src/*.ts", "/p/src/d/a.ts", False),
        ("src/**/*.ts", "/p/src/a.ts", True),
        ("src/**/*.ts", "/p/src/d/e/a.ts", True),
        ("src/**", "/p/src/d/e", True),
        ("src/*.{ts,tsx}", "/p/src/a.tsx", True),
        ("src/*.{ts,tsx}", "/p/src/a.js", False),
        ("src/{a,b/{c,d}}.ts", "/p/src/b/d.ts", True),
        ("src/[ab].ts", "/p/src/b.ts", True),
        ("src/[!ab].ts", "/p/src/b.ts", False),
        ("src/[!ab].ts", "/p/src/c.ts", True),
        ("src/[a-c].ts", "/p/src/c.ts", True),
        ("src/[]].ts", "/p/src/].ts", True),  # ']' first in a class is a member (POSIX)
        ("src/[!]].ts", "/p/src/].ts", False),
        ("src/[!]].ts", "/p/src/a.ts", True),
        ("src/[a&&b|~].ts", "/p/src/&.ts", True),  # regex set operators stay literal
        ("src/[a-c-e].ts", "/p/src/-.ts", True),
        ("src/a[%-0]b", "/p/src/a/b", False),  # a class never matches '/'
        ("src/{a,[}]}", "/p/src/}", True),  # a class inside braces is one unit
        ("src/{[,],x}", "/p/src/,", True),
        ("src/**", "/p/src", True),  # '**' may match zero segments
        ("src/**/**", "/p/src", True),
        ("src/**/*", "/p/src/line\nbreak", True),  # names may hold any character but NUL
        ("SRC/*.ts", "/p/src/a.ts", False),  # case-sensitive
        ("src/a.ts", "/p/src/a.ts", True),
        ("src/a.ts", "/p/src/a.tsx", False),
    ],
)
def test_matching_table(pattern: str, path: str, matched: bool) -> None:
    """PATH: glob semantics on concrete paths."""
    assert parse_pattern(pattern, project_dir="p").matches(path) is matched


@pytest.mark.parametrize(
    ("a", "b", "overlap"),
    [
        ("/x/a.txt", "/x/a.txt", True),
        ("/x/a.txt", "/x/b.txt", False),
        ("/x/a", "/x/a/b", False),  # two literals overlap only when equal
        ("/x/**", "/x/a/b", True),
        ("/x/**", "/xy/a", False),  # segment prefixes, not string prefixes
        ("/x/a/*.js", "/x/**", True),
        ("/*.js", "/deep/down/a", True),
    ],
)
def test_patterns_overlap(a: str, b: str, overlap: bool) -> None:
    """DAG-013: the producer-edge relation is symmetric."""
    pa, pb = parse_pattern(a, project_dir=""), parse_pattern(b, project_dir="")
    assert patterns_overlap(pa, pb) is overlap
    assert patterns_overlap(pb, pa) is overlap


def test_pattern_value_is_frozen() -> None:
    """STYLE: patterns are immutable values."""
    pattern = parse_pattern("a", project_dir="")
    assert isinstance(pattern, PathPattern)
    with pytest.raises(AttributeError):
        pattern.text = "b"  # type: ignore[misc]  # frozen: the error is the point
