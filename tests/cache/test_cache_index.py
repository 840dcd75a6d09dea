"""The local per-task index that `haz why` reads (CACHE-011: local only, no env values)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from hazremote.cache import TaskIndex
from hazremote.domain.refs import TaskId
from tests.cache.cachekit import FakeClock, make_key

APP = TaskId("app", "build")
LIB = TaskId("lib", "build")


@pytest.fixture
def index(tmp_path: Path, clock: FakeClock) -> TaskIndex:
    return TaskIndex(tmp_path / "state" / "why", clock=clock, keep=3)


def test_recent_keys_are_newest_first_and_bounded(index: TaskIndex, clock: FakeClock) -> None:
    """haz why: the most recent stored keys of a task, at most `keep` of them."""
    for i in range(5):
        clock.now += 60
        assert index.record_task_key(APP, make_key(f"k{i}"), {}) is None
    records = index.recent_keys(APP)
    assert [r.key for r in records] == [make_key("k4"), make_key("k3"), make_key("k2")]
    assert records[0].recorded_at_unix == int(clock.now)
    assert index.recent_keys(LIB) == []


def test_recording_a_known_key_again_moves_it_to_the_front(index: TaskIndex) -> None:
    """haz why: one record per key, refreshed on re-store."""
    for label in ("a", "b", "a"):
        index.record_task_key(APP, make_key(label), {})
    assert [r.key for r in index.recent_keys(APP)] == [make_key("a"), make_key("b")]


def test_env_values_are_never_written_in_clear(index: TaskIndex, tmp_path: Path) -> None:
    """CACHE-011: the index holds salted fingerprints; the salt file is private (0600)."""
    index.record_task_key(APP, make_key("k"), {"API_TOKEN": "hunter2-secret", "CC": None})
    for path in (tmp_path / "state" / "why").iterdir():
        assert b"hunter2-secret" not in path.read_bytes()
    salt = tmp_path / "state" / "why" / "env-salt"
    assert stat.S_IMODE(salt.stat().st_mode) == 0o600
    record = index.recent_keys(APP)[0]
    assert record.env["CC"] is None
    assert record.env["API_TOKEN"] is not None


def test_changed_env_names_exactly_the_variables_that_differ(
    index: TaskIndex, tmp_path: Path, clock: FakeClock
) -> None:
    """haz why: which hashed variables changed (value, set/unset, added, removed)."""
    index.record_task_key(
        APP,
        make_key("k"),
        {"NODE_VERSION": "20", "MODE": "release", "CC": None, "GONE": "x", "SAME": "s"},
    )
    record = index.recent_keys(APP)[0]
    now = {"NODE_VERSION": "22", "MODE": "release", "CC": "clang", "NEW": "1", "SAME": "s"}
    assert index.changed_env(record, now) == ["CC", "GONE", "NEW", "NODE_VERSION"]
    # A second index object over the same directory (a later `haz why`) agrees.
    later = TaskIndex(tmp_path / "state" / "why", clock=clock)
    assert later.changed_env(later.recent_keys(APP)[0], now) == [
        "CC",
        "GONE",
        "NEW",
        "NODE_VERSION",
    ]


def test_unreadable_index_is_empty_not_an_error(index: TaskIndex, tmp_path: Path) -> None:
    """The index only explains misses: garbage reads as nothing recorded."""
    index.record_task_key(APP, make_key("k"), {})
    (tmp_path / "state" / "why" / "app:build.json").write_text("{not json")
    assert index.recent_keys(APP) == []
    assert index.record_task_key(APP, make_key("k2"), {}) is None
    assert [r.key for r in index.recent_keys(APP)] == [make_key("k2")]


def test_unwritable_index_is_a_warning(tmp_path: Path, clock: FakeClock) -> None:
    """The index never fails a run: a write failure comes back as a warning."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    index = TaskIndex(blocker / "why", clock=clock)
    warning = index.record_task_key(APP, make_key("k"), {"A": "1"})
    assert warning is not None
    assert "app:build" in warning
