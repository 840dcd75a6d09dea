"""Names of projects, tasks, tags and mutexes (ID-001..003) and sanitising (DISC-006)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hazremote.domain.names import is_valid_name, name_problem, sanitize_name


@pytest.mark.parametrize(
    "name", ["a", "A", "0", "web", "web-app", "web_app", "9lives", "a-", "a_", "x" * 64]
)
def test_valid_names(name: str) -> None:
    """ID-001..003: [A-Za-z0-9_-], first character alphanumeric, 1–64 bytes."""
    assert is_valid_name(name)
    assert name_problem(name) is None


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "must not be empty"),
        ("x" * 65, "is longer than 64 bytes"),
        ("-web", "'-web' must start with a letter or digit"),
        ("_web", "'_web' must start with a letter or digit"),
        ("élan", "'élan' must start with a letter or digit"),
        ("web.app", "'web.app' contains '.'; names use only [A-Za-z0-9_-]"),
        ("web app", "'web app' contains ' '; names use only [A-Za-z0-9_-]"),
        ("web:build", "'web:build' contains ':'; names use only [A-Za-z0-9_-]"),
        ("café", "'café' contains 'é'; names use only [A-Za-z0-9_-]"),
        ("a\n", "'a\\n' contains '\\n'; names use only [A-Za-z0-9_-]"),
    ],
)
def test_invalid_names_are_explained(name: str, problem: str) -> None:
    """ID-001..003: name_problem says what is wrong; is_valid_name agrees."""
    assert name_problem(name) == problem
    assert not is_valid_name(name)


@pytest.mark.parametrize(
    ("raw", "sanitised"),
    [
        ("web", "web"),
        ("my app", "my-app"),
        ("my.app.v2", "my-app-v2"),
        ("__private", "private"),
        ("-_-x", "x"),
        ("@scope+pkg", "scope-pkg"),
        ("日本", ""),
        ("a" * 80, "a" * 64),
    ],
)
def test_sanitize_name(raw: str, sanitised: str) -> None:
    """DISC-006: invalid characters become '-', a leading non-alphanumeric run is dropped,
    the result is cut to 64 bytes; "" when nothing usable is left."""
    assert sanitize_name(raw) == sanitised


@given(st.text(max_size=80))
def test_name_problem_agrees_with_is_valid_name(text: str) -> None:
    """ID-001..003: the explanation exists exactly when the name is invalid."""
    assert (name_problem(text) is None) == is_valid_name(text)


@given(st.text(max_size=100))
def test_sanitized_names_are_valid_or_empty(text: str) -> None:
    """DISC-006: sanitising never produces an invalid name."""
    name = sanitize_name(text)
    assert name == "" or is_valid_name(name)
