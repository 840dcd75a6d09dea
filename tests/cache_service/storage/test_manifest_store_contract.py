"""The ManifestStore contract, asserted identically on memory, disk and S3 (SVC-001/002, SEC-004).

S3 runs against a real SeaweedFS, so ``put_if_absent`` races are decided by the server's
conditional PUT exactly as they would be between replicas.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from hazremote.domain.digest import Digest, digest_bytes
from hazremote.domain.model import HashName
from tests.cache_service.storage.conftest import ManifestBackend


def _key(label: str) -> Digest:
    return digest_bytes(HashName.BLAKE3, label.encode())


def test_put_if_absent_stores_once_and_keeps_the_original(
    manifest_backend: ManifestBackend,
) -> None:
    """SEC-004: the first put stores; a later one answers False and the original stays."""
    store, key = manifest_backend.store, _key("k1")
    assert store.get("main", HashName.BLAKE3, key) is None
    assert store.put_if_absent("main", HashName.BLAKE3, key, b'{"v": 1}') is True
    assert store.put_if_absent("main", HashName.BLAKE3, key, b'{"v": 2}') is False
    assert store.get("main", HashName.BLAKE3, key) == b'{"v": 1}'


def test_replace_overwrites_unconditionally(manifest_backend: ManifestBackend) -> None:
    """SEC-004: an entry whose blobs are gone may be replaced."""
    store, key = manifest_backend.store, _key("k2")
    store.replace("main", HashName.BLAKE3, key, b"first")
    store.replace("main", HashName.BLAKE3, key, b"second")
    assert store.get("main", HashName.BLAKE3, key) == b"second"


def test_delete_removes_and_tolerates_absent(manifest_backend: ManifestBackend) -> None:
    """SEC-006 purge / gc: delete removes a manifest; deleting nothing is no error."""
    store, key = manifest_backend.store, _key("k3")
    store.put_if_absent("main", HashName.BLAKE3, key, b"doc")
    store.delete("main", HashName.BLAKE3, key)
    assert store.get("main", HashName.BLAKE3, key) is None
    store.delete("main", HashName.BLAKE3, key)
    assert store.put_if_absent("main", HashName.BLAKE3, key, b"again") is True


def test_namespaces_and_hash_functions_are_isolated(manifest_backend: ManifestBackend) -> None:
    """SEC-003: the same key in two namespaces (or under two hashes) is two entries."""
    store, key = manifest_backend.store, _key("shared")
    assert store.put_if_absent("main", HashName.BLAKE3, key, b"trusted") is True
    assert store.put_if_absent("pr-123", HashName.BLAKE3, key, b"untrusted") is True
    assert store.put_if_absent("main", HashName.SHA256, key, b"sha") is True
    assert store.get("main", HashName.BLAKE3, key) == b"trusted"
    assert store.get("pr-123", HashName.BLAKE3, key) == b"untrusted"
    assert store.get("main", HashName.SHA256, key) == b"sha"
    listed = {(i.namespace, i.hash_name, i.key, i.stored_bytes) for i in store.iterate("main")}
    assert listed == {
        ("main", HashName.BLAKE3, key, len(b"trusted")),
        ("main", HashName.SHA256, key, len(b"sha")),
    }
    everything = {(i.namespace, i.hash_name) for i in store.iterate()}
    assert everything == {
        ("main", HashName.BLAKE3),
        ("pr-123", HashName.BLAKE3),
        ("main", HashName.SHA256),
    }


@pytest.mark.parametrize("namespace", ["..", "a/b", "", "-x", "x" * 65, "ns with space"])
def test_invalid_namespaces_are_rejected(manifest_backend: ManifestBackend, namespace: str) -> None:
    """SEC-003: a namespace is an ID-like name, so it can never escape its prefix."""
    with pytest.raises(ValueError, match="invalid namespace"):
        manifest_backend.store.put_if_absent(namespace, HashName.BLAKE3, _key("x"), b"doc")


def test_concurrent_put_if_absent_has_exactly_one_winner(
    manifest_backend: ManifestBackend,
) -> None:
    """SEC-004: many racing writers (threads here, replicas in production): exactly one wins,
    and the stored document is the winner's, complete."""
    store, key = manifest_backend.store, _key("race")
    racers = 12
    barrier = threading.Barrier(racers)

    def put(i: int) -> bool:
        barrier.wait()
        return store.put_if_absent("main", HashName.BLAKE3, key, f"doc-{i}".encode() * 100)

    with ThreadPoolExecutor(max_workers=racers) as pool:
        results = list(pool.map(put, range(racers)))
    assert results.count(True) == 1
    winner = results.index(True)
    assert store.get("main", HashName.BLAKE3, key) == f"doc-{winner}".encode() * 100


def test_object_names_carry_layout_version_and_hash(manifest_backend: ManifestBackend) -> None:
    """SVC-002: manifests live at v1/ns/<namespace>/ac/<hash>/<aa>/<hexkey>, nothing else."""
    if manifest_backend.names is None:
        pytest.skip("this backend has no raw object names to inspect")
    key = _key("layout")
    manifest_backend.store.put_if_absent("team-a", HashName.SHA256, key, b"doc")
    manifest_backend.store.replace("team-a", HashName.BLAKE3, key, b"doc")
    assert manifest_backend.names() == {
        f"v1/ns/team-a/ac/sha256/{key.hex[:2]}/{key.hex}",
        f"v1/ns/team-a/ac/blake3/{key.hex[:2]}/{key.hex}",
    }
