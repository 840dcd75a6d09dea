"""Keys known to be on a remote (:mod:`hazremote.remote.known`), kept between runs.

Spec coverage: RC-002 (a warm replay asks the remote nothing about keys confirmed there;
a confirmation expires after MAX_AGE_DAYS; the state is rebuildable: damage means empty).
"""

from __future__ import annotations

from pathlib import Path

from hazremote.domain.digest import Digest
from hazremote.remote.known import MAX_AGE_DAYS, KnownRemoteKeys, known_keys_path

DAY = 86400.0
A, B, C = (Digest(bytes([n]) * 32) for n in (1, 2, 3))


def test_confirmed_keys_survive_a_save_and_reload(tmp_path: Path) -> None:
    path = known_keys_path(tmp_path, url="grpc://h:1", namespace="main")
    known = KnownRemoteKeys(path, clock=lambda: 100 * DAY)
    assert A not in known
    known.add([A, B])
    assert A in known
    assert known.save() is True
    assert known.save() is False  # nothing new
    reloaded = KnownRemoteKeys(path, clock=lambda: 100 * DAY)
    assert A in reloaded
    assert B in reloaded
    assert C not in reloaded


def test_each_remote_and_namespace_has_its_own_file(tmp_path: Path) -> None:
    paths = {
        known_keys_path(tmp_path, url=url, namespace=ns)
        for url in ("grpc://a:1", "grpc://b:1")
        for ns in ("main", "pr-1")
    }
    assert len(paths) == 4


def test_a_confirmation_expires_after_max_age(tmp_path: Path) -> None:
    path = tmp_path / "known.bin"
    known = KnownRemoteKeys(path, clock=lambda: 100 * DAY)
    known.add([A])
    known.save()
    assert A in KnownRemoteKeys(path, clock=lambda: (100 + MAX_AGE_DAYS - 1) * DAY)
    assert A not in KnownRemoteKeys(path, clock=lambda: (100 + MAX_AGE_DAYS) * DAY)


def test_saves_merge_with_another_run(tmp_path: Path) -> None:
    path = tmp_path / "known.bin"
    one = KnownRemoteKeys(path, clock=lambda: 100 * DAY)
    two = KnownRemoteKeys(path, clock=lambda: 100 * DAY)
    one.add([A])
    two.add([B])
    one.save()
    two.save()
    merged = KnownRemoteKeys(path, clock=lambda: 100 * DAY)
    assert A in merged
    assert B in merged


def test_a_damaged_file_counts_as_empty(tmp_path: Path) -> None:
    path = tmp_path / "known.bin"
    for damage in (b"", b"junk", b"HAZKNOWN\x01\x00\x00\x00" + b"x" * 7):
        path.write_bytes(damage)
        known = KnownRemoteKeys(path, clock=lambda: 100 * DAY)
        assert A not in known
        known.add([A])
        assert known.save()
        assert A in KnownRemoteKeys(path, clock=lambda: 100 * DAY)
