"""Object names shared by every backend.

Spec coverage:
* SVC-002 — ``v1/cas/<hash>/<aa>/<hexdigest>-<size>`` and ``v1/ns/<ns>/ac/<hash>/<aa>/<hexkey>``.
* SEC-003 — namespaces are ID-like names, checked so that none escapes its prefix.
Out of scope: where the names are rooted (a directory, a bucket prefix) — the leaves decide.
"""

from __future__ import annotations

from dataclasses import dataclass

from cache_service.storage.base import BlobRef
from hazremote.domain.digest import Digest
from hazremote.domain.model import HashName
from hazremote.domain.names import name_problem

__all__ = [
    "CAS_PREFIX",
    "LAYOUT_VERSION",
    "NS_PREFIX",
    "ManifestName",
    "blob_name",
    "check_blob_ref",
    "check_namespace",
    "manifest_name",
    "parse_blob_name",
    "parse_manifest_name",
]

#: SVC-002: the layout's format version; a layout change is a new prefix.
LAYOUT_VERSION = "v1"
CAS_PREFIX = f"{LAYOUT_VERSION}/cas/"
NS_PREFIX = f"{LAYOUT_VERSION}/ns/"
_HASHES = {h.value: h for h in HashName}


def check_blob_ref(ref: BlobRef) -> None:
    """Reject a ref that cannot name an object (a negative size)."""
    if ref.size < 0:
        raise ValueError(f"a blob size is never negative, got {ref.size}")


def check_namespace(namespace: str) -> None:
    """SEC-003: a namespace is an ID-like name; anything else could escape its prefix.

    Raises:
        ValueError: naming what is wrong with ``namespace``.
    """
    problem = name_problem(namespace)
    if problem is not None:
        raise ValueError(f"invalid namespace: {problem}")


def blob_name(ref: BlobRef) -> str:
    """``v1/cas/<hash>/<aa>/<hexdigest>-<size>`` (SVC-002)."""
    check_blob_ref(ref)
    hexdigest = ref.digest.hex
    return f"{CAS_PREFIX}{ref.hash_name.value}/{hexdigest[:2]}/{hexdigest}-{ref.size}"


def parse_blob_name(name: str) -> BlobRef | None:
    """The ref a blob object name stands for, or None for anything else (temp files …)."""
    if not name.startswith(CAS_PREFIX):
        return None
    parts = name[len(CAS_PREFIX) :].split("/")
    if len(parts) != 3 or parts[0] not in _HASHES:
        return None
    hexdigest, sep, size_text = parts[2].partition("-")
    if not sep or not size_text.isdigit() or parts[1] != hexdigest[:2]:
        return None
    try:
        digest = Digest.from_hex(hexdigest)
    except ValueError:
        return None
    return BlobRef(hash_name=_HASHES[parts[0]], digest=digest, size=int(size_text))


def manifest_name(namespace: str, hash_name: HashName, key: Digest) -> str:
    """``v1/ns/<namespace>/ac/<hash>/<aa>/<hexkey>`` (SVC-002)."""
    check_namespace(namespace)
    hexkey = key.hex
    return f"{NS_PREFIX}{namespace}/ac/{hash_name.value}/{hexkey[:2]}/{hexkey}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ManifestName:
    namespace: str
    hash_name: HashName
    key: Digest


def parse_manifest_name(name: str) -> ManifestName | None:
    """The (namespace, hash, key) a manifest object name stands for, or None."""
    if not name.startswith(NS_PREFIX):
        return None
    parts = name[len(NS_PREFIX) :].split("/")
    if len(parts) != 5 or parts[1] != "ac" or parts[2] not in _HASHES:
        return None
    if name_problem(parts[0]) is not None or parts[3] != parts[4][:2]:
        return None
    try:
        key = Digest.from_hex(parts[4])
    except ValueError:
        return None
    return ManifestName(namespace=parts[0], hash_name=_HASHES[parts[2]], key=key)
