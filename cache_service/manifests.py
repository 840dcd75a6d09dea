"""Manifests as the service sees them: validation, completeness, immutability, producer.

Synchronous and blocking like the storage ports, except :meth:`ManifestService.lookup_nowait`.

Spec coverage:
* CACHE-011 — a put is parsed strictly; its key and hash function must be the request's.
* CACHE-011 — an output's ``symlink`` is checked by the same parser (issue 12).
* RC-005 — a put is accepted only when every referenced blob is present.
* SEC-003 — namespaces are validated; :meth:`ManifestService.lookup` follows read-through.
* SEC-004 — an identical put is ``created=False``; a different one conflicts, unless blobs are gone.
* SEC-006 — the stored ``producer`` is the authenticated identity, never the client's value.
Out of scope: gRPC, authentication (the caller passes the identity), storage layout.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from typing import Literal

from cache_service.errors import (
    InvalidRequestError,
    LimitExceededError,
    ManifestConflictError,
    MissingBlobsError,
)
from cache_service.storage.base import WOULD_BLOCK, BlobRef, BlobStore, ManifestStore, WouldBlock
from hazremote.cache.manifest import (
    Manifest,
    ManifestError,
    ManifestSchemaError,
    parse_manifest,
)
from hazremote.domain.digest import Digest
from hazremote.domain.model import HashName
from hazremote.domain.names import name_problem
from hazremote.keys.framing import CHAPTER_REVISION

__all__ = ["ManifestService", "content_of", "referenced_blobs", "validate_namespace"]


#: Namespaces found valid, so a lookup does not check its namespace again (a few per
#: service); cleared when it holds :data:`_VALID_NAMESPACES_MAX`.
_valid_namespaces: set[str] = set()
_VALID_NAMESPACES_MAX = 1024


def validate_namespace(namespace: str) -> None:
    """SEC-003: a namespace is an ID-like name.

    Raises:
        InvalidRequestError: naming the problem.
    """
    if namespace in _valid_namespaces:
        return
    problem = name_problem(namespace)
    if problem is not None:
        raise InvalidRequestError(f"namespace {problem}")
    if len(_valid_namespaces) >= _VALID_NAMESPACES_MAX:
        _valid_namespaces.clear()
    _valid_namespaces.add(namespace)


def referenced_blobs(manifest: Manifest) -> list[BlobRef]:
    """RC-005: every blob a manifest references, stdout and stderr first."""
    hash_name = manifest.hash_function
    refs = [
        BlobRef(hash_name=hash_name, digest=manifest.stdout.hash, size=manifest.stdout.size),
        BlobRef(hash_name=hash_name, digest=manifest.stderr.hash, size=manifest.stderr.size),
    ]
    refs.extend(BlobRef(hash_name=hash_name, digest=o.hash, size=o.size) for o in manifest.outputs)
    return refs


def content_of(manifest: Manifest) -> tuple[object, ...]:
    """SEC-004: what two manifests must share to be "identical" — outputs, streams, exit code.

    Timestamps, duration and producer differ between honest runs and are ignored; so is the
    compression marker, a property of how one cache stored a blob rather than of its content.
    A link record's text is content: a link and a copy of the same bytes differ.
    """
    return (
        manifest.exit_code,
        (manifest.stdout.hash, manifest.stdout.size),
        (manifest.stderr.hash, manifest.stderr.size),
        tuple(sorted((o.path, o.hash, o.size, o.mode, o.symlink or "") for o in manifest.outputs)),
    )


def _parse(document: bytes, hash_name: HashName) -> Manifest:
    """Parse strictly (CACHE-011) against the revision the document declares.

    The service stores manifests of every chapter revision (it never interprets tasks): the
    current revision is tried first, and only a schema mismatch pays for a second look.
    """
    try:
        return parse_manifest(document, chapter_revision=CHAPTER_REVISION, hash_name=hash_name)
    except ManifestSchemaError:
        try:
            declared = json.loads(document.decode("utf-8")).get("chapter_revision")
        except (ValueError, AttributeError, RecursionError):
            declared = None
        if not isinstance(declared, int) or isinstance(declared, bool):
            raise
        if declared == CHAPTER_REVISION:
            raise
        return parse_manifest(document, chapter_revision=declared, hash_name=hash_name)


class ManifestService:
    """Manifest operations of the ManifestStore API over the storage ports."""

    def __init__(
        self,
        *,
        manifests: ManifestStore,
        blobs: BlobStore,
        max_batch_items: int,
        on_lookup: Callable[[bool], None] | None = None,
    ) -> None:
        """Args:
        manifests: Where documents live.
        blobs: Checked for completeness (RC-005, SEC-004's exception).
        max_batch_items: SVC-006 limit of keys per batch lookup.
        on_lookup: Called with True on a hit and False on a miss (metrics).
        """
        self._manifests = manifests
        self._blobs = blobs
        self._max_batch_items = max_batch_items
        self._on_lookup = on_lookup

    def get(self, namespace: str, hash_name: HashName, key: Digest) -> bytes | None:
        """The stored document, or None on a miss (a miss is a value, not an error)."""
        validate_namespace(namespace)
        document = self._manifests.get(namespace, hash_name, key)
        if self._on_lookup is not None:
            self._on_lookup(document is not None)
        return document

    def get_many(
        self, namespace: str, hash_name: HashName, keys: Sequence[Digest]
    ) -> list[bytes | None]:
        validate_namespace(namespace)
        if len(keys) > self._max_batch_items:
            raise LimitExceededError(
                f"{len(keys)} keys in one batch; the limit is {self._max_batch_items}"
            )
        return [self.get(namespace, hash_name, key) for key in keys]

    def _counted(self, results: list[tuple[bytes, str] | None]) -> list[tuple[bytes, str] | None]:
        on_lookup = self._on_lookup
        if on_lookup is not None:
            for found in results:
                on_lookup(found is not None)
        return results

    def lookup(
        self, chain: Sequence[str], hash_name: HashName, keys: Sequence[Digest]
    ) -> list[tuple[bytes, str] | None]:
        """SEC-003: each key's document and the namespace it was found in, trying the
        namespaces of ``chain`` in order (one hit-or-miss count per key); None on a miss.

        Raises:
            InvalidRequestError: a namespace of the chain is not a valid name.
            LimitExceededError: more keys than the batch limit.
        """
        found = self._search(self._manifests.get, chain, hash_name, keys)
        assert found is not WOULD_BLOCK  # get() always answers
        return found

    def lookup_nowait(
        self, chain: Sequence[str], hash_name: HashName, keys: Sequence[Digest]
    ) -> list[tuple[bytes, str] | None] | Literal[WouldBlock.WOULD_BLOCK]:
        """:meth:`lookup` without waiting for I/O (safe on an event loop): its answer when
        the store can give every document that way, else :data:`WOULD_BLOCK` (nothing is
        counted then; call :meth:`lookup` from a worker thread).

        Raises:
            InvalidRequestError: a namespace of the chain is not a valid name.
            LimitExceededError: more keys than the batch limit.
        """
        return self._search(self._manifests.get_nowait, chain, hash_name, keys)

    def _search(
        self,
        get: Callable[[str, HashName, Digest], bytes | Literal[WouldBlock.WOULD_BLOCK] | None],
        chain: Sequence[str],
        hash_name: HashName,
        keys: Sequence[Digest],
    ) -> list[tuple[bytes, str] | None] | Literal[WouldBlock.WOULD_BLOCK]:
        """Each key in the namespaces of ``chain``, in order, through ``get``."""
        if not chain:
            raise InvalidRequestError("a lookup needs at least one namespace")
        for namespace in chain:
            if namespace not in _valid_namespaces:
                validate_namespace(namespace)
        if len(keys) > self._max_batch_items:
            raise LimitExceededError(
                f"{len(keys)} keys in one batch; the limit is {self._max_batch_items}"
            )
        results: list[tuple[bytes, str] | None] = []
        for key in keys:
            found = None
            for namespace in chain:
                document = get(namespace, hash_name, key)
                if document is WOULD_BLOCK:
                    return WOULD_BLOCK  # nothing counted: the caller asks again with get()
                if document is not None:
                    found = (document, namespace)
                    break
            results.append(found)
        return self._counted(results)

    def put(
        self, namespace: str, hash_name: HashName, key: Digest, document: bytes, *, producer: str
    ) -> bool:
        """Store a manifest; returns True when created, False when an identical one existed.

        Raises:
            InvalidRequestError: bad namespace, or the document's key is not ``key``.
            ManifestError: the document is not a valid CACHE-011 manifest (names the field).
            MissingBlobsError: RC-005.
            ManifestConflictError: SEC-004.
        """
        validate_namespace(namespace)
        manifest = _parse(document, hash_name)
        if manifest.key != key:
            raise InvalidRequestError(
                f"manifest key {manifest.key} does not match the request's key {key}"
            )
        refs = referenced_blobs(manifest)
        missing = self._blobs.missing(refs)
        if missing:
            first = missing[0]
            raise MissingBlobsError(
                f"manifest references {len(missing)} missing blob(s), first {first.digest} "
                f"({first.size} bytes); upload blobs before their manifest"
            )
        stored = dataclasses.replace(manifest, producer=producer).to_json()
        for _ in range(3):  # a concurrent delete between the two calls: try again
            if self._manifests.put_if_absent(namespace, hash_name, key, stored):
                return True
            existing = self._manifests.get(namespace, hash_name, key)
            if existing is None:
                continue
            return self._settle(
                namespace=namespace,
                hash_name=hash_name,
                key=key,
                manifest=manifest,
                existing=existing,
                stored=stored,
            )
        raise ManifestConflictError(f"manifest {key} changed concurrently; try again")

    def _settle(
        self,
        *,
        namespace: str,
        hash_name: HashName,
        key: Digest,
        manifest: Manifest,
        existing: bytes,
        stored: bytes,
    ) -> bool:
        """SEC-004 for a key that already has a document."""
        try:
            original: Manifest | None = _parse(existing, hash_name)
        except ManifestError:
            original = None  # an unreadable original protects nothing: replace it
        if original is not None and content_of(original) == content_of(manifest):
            return False
        if original is not None and not self._blobs.missing(referenced_blobs(original)):
            raise ManifestConflictError(
                f"a different manifest is already stored for key {key} in namespace "
                f"{namespace!r}; manifests are immutable"
            )
        self._manifests.replace(namespace, hash_name, key, stored)
        return True
