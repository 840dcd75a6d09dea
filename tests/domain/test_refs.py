"""Task references (REF-001..008) and task ids (DAG-007): table-driven and property tests."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hazremote.domain.refs import (
    RefKind,
    TaskId,
    TaskRef,
    parse_cli_target,
    parse_ref,
    parse_task_id,
)
from hazremote.errors import ReferenceError_

NAMES = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", fullmatch=True)


@st.composite
def task_refs(draw: st.DrawFn) -> TaskRef:
    kind = draw(st.sampled_from(RefKind))
    task = draw(NAMES)
    match kind:
        case RefKind.PROJECT:
            return TaskRef(kind, task, project=draw(NAMES))
        case RefKind.TAG | RefKind.TAG_OTHERS:
            return TaskRef(kind, task, tag=draw(NAMES))
        case _:
            return TaskRef(kind, task)


@given(task_refs())
def test_canonical_spelling_round_trips(ref: TaskRef) -> None:
    """REF-001..006: str(ref) parses back to an equal reference."""
    assert parse_ref(str(ref)) == ref


@given(st.text(max_size=80))
def test_random_text_raises_only_reference_error(text: str) -> None:
    """REF-008: any text either parses (and then round-trips) or raises ReferenceError_."""
    try:
        ref = parse_ref(text)
    except ReferenceError_:
        return
    assert parse_ref(str(ref)) == ref


@given(st.text(alphabet="~^[]:ab-_ 1", max_size=12))
def test_reference_like_text_raises_only_reference_error(text: str) -> None:
    """REF-008: text made of the reference punctuation never crashes the parser."""
    try:
        ref = parse_ref(text)
    except ReferenceError_:
        return
    assert str(ref) == text  # the only accepted spellings are the canonical ones


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("~:build", TaskRef(RefKind.SAME, "build")),
        ("web:build", TaskRef(RefKind.PROJECT, "build", project="web")),
        ("^:build", TaskRef(RefKind.ALL, "build")),
        ("^~:build", TaskRef(RefKind.ALL_OTHERS, "build")),
        ("[ui]:build", TaskRef(RefKind.TAG, "build", tag="ui")),
        ("[ui]~:build", TaskRef(RefKind.TAG_OTHERS, "build", tag="ui")),
    ],
)
def test_the_six_forms(text: str, expected: TaskRef) -> None:
    """REF-001..006."""
    assert parse_ref(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "build",
            "invalid task reference 'build': write ~:build for a task of the same project, "
            "or project:task, ^:task, ^~:task, [tag]:task, [tag]~:task",
        ),
        ("web:", "invalid task reference 'web:': task name must not be empty"),
        (":build", "invalid task reference ':build': project name must not be empty"),
        ("[ui:build", "invalid task reference '[ui:build': unclosed '[tag]'"),
        ("[]:build", "invalid task reference '[]:build': tag must not be empty"),
        (
            "[u i]:b",
            "invalid task reference '[u i]:b': tag 'u i' contains ' '; names use only "
            "[A-Za-z0-9_-]",
        ),
        (
            "a:b:c",
            "invalid task reference 'a:b:c': project name 'a:b' contains ':'; names use "
            "only [A-Za-z0-9_-]",
        ),
        (
            "~~:b",
            "invalid task reference '~~:b': project name '~~' must start with a letter or digit",
        ),
        (None, "a task reference must be a string, got None"),
    ],
)
def test_invalid_references_are_explained(text: object, message: str) -> None:
    """REF-008: the error names the reference and what is wrong (exit 2)."""
    with pytest.raises(ReferenceError_) as caught:
        parse_ref(text)
    assert str(caught.value) == message
    assert caught.value.exit_code == 2


@pytest.mark.parametrize(
    ("text", "bearing", "expected"),
    [
        ("build", True, "~:build"),
        ("build", False, "^:build"),
        ("web:build", True, "web:build"),
        ("^~:build", False, "^~:build"),
    ],
)
def test_cli_target(text: str, bearing: bool, expected: str) -> None:
    """REF-007: a bare command-line task is ~:task with a bearing project, else ^:task."""
    assert str(parse_cli_target(text, has_bearing_project=bearing)) == expected


def test_cli_target_rejects_bad_bare_names() -> None:
    """REF-008: a bare target must be a valid task name."""
    with pytest.raises(ReferenceError_, match="task name 'a b' contains ' '"):
        parse_cli_target("a b", has_bearing_project=True)


def test_task_id_parsing_and_canonical_order() -> None:
    """DAG-007: project:task ids; canonical order is (project, task) lexicographic."""
    assert parse_task_id("web:build") == TaskId("web", "build")
    with pytest.raises(ReferenceError_, match="expected a task id project:task, got '~:build'"):
        parse_task_id("~:build")
    ids = [TaskId("b", "a"), TaskId("a", "z"), TaskId("a", "b"), TaskId("a-b", "a")]
    assert [str(i) for i in sorted(ids)] == ["a:b", "a:z", "a-b:a", "b:a"]
