"""S3 leaves over boto3 (``s3://BUCKET/PREFIX``).

Spec coverage:
* SVC-001 — :class:`S3BlobStore` and :class:`S3ManifestStore` implement the storage ports on
  an S3 bucket; endpoint, region and credentials come from arguments or the standard AWS
  chain (environment, shared config, instance roles). Several replicas may share a bucket.
* SVC-002 — keys are ``<prefix>/v1/cas/...`` and ``<prefix>/v1/ns/...`` (:mod:`._layout`).
* RC-006 — a blob write is spooled to a temp file (in memory only while small) and then sent
  with one PUT, or as a multipart upload when large: never held whole in memory, and visible
  only once complete (S3 publishes an object atomically).
* SEC-004 — ``put_if_absent`` is a conditional PUT (``If-None-Match: *``): S3 itself decides
  the race between replicas; ``412 PreconditionFailed`` means another writer won.
* RC-003 (server side) — botocore runs with bounded connect/read timeouts and standard retries,
  and every botocore failure becomes a :class:`StorageError` naming the operation and key, so a
  dead or black-holed endpoint is an error within a bounded time, never a hang.
* Issue 5 (lookup speed) — :meth:`S3ManifestStore.get` first tries a lean signed GET
  (:mod:`._s3_fast`: botocore's SigV4 signer, a pooled urllib3 connection, the client's
  endpoint, region, credentials, TLS and timeouts); it answers a found or NoSuchKey object and
  leaves everything else to the boto3 read, so retries and errors are exactly boto3's.
Out of scope: creating buckets (:func:`check_bucket` only verifies one exists), lifecycle
rules, and server-side encryption settings (bucket policy).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import email.utils
import io
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, BinaryIO, Literal, NoReturn

import boto3
import botocore.session
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from botocore.utils import parse_timestamp

from cache_service.storage._layout import (
    CAS_PREFIX,
    NS_PREFIX,
    blob_name,
    check_namespace,
    manifest_name,
    parse_blob_name,
    parse_manifest_name,
)
from cache_service.storage._s3_fast import FALL_BACK, SignedGet
from cache_service.storage.base import (
    WOULD_BLOCK,
    BlobInfo,
    BlobRef,
    ManifestInfo,
    ReadingRaw,
    StorageError,
    StoredChunk,
    WouldBlock,
)
from hazremote.domain.digest import Digest
from hazremote.domain.model import HashName

__all__ = [
    "S3BlobStore",
    "S3Location",
    "S3ManifestStore",
    "S3Settings",
    "check_bucket",
    "make_s3_client",
]

_MIB = 1024 * 1024
#: Blobs up to this many stored bytes go in one PUT from memory; larger ones are spooled to
#: disk and sent as a multipart upload.
_SPOOL_IN_MEMORY = 8 * _MIB
_TRANSFER = TransferConfig(
    multipart_threshold=16 * _MIB, multipart_chunksize=8 * _MIB, max_concurrency=4
)
_NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
_PRECONDITION_FAILED = "PreconditionFailed"
#: AWS answers 409 when two conditional writes of one key overlap; the loser retries and
#: then sees 412.
_CONDITIONAL_CONFLICT = "ConditionalRequestConflict"


@dataclass(frozen=True, slots=True, kw_only=True)
class S3Location:
    """A bucket and a key prefix ("" or ending in ``/``), parsed from ``s3://bucket/prefix``."""

    bucket: str
    prefix: str = ""

    @classmethod
    def parse(cls, url: str) -> S3Location:
        """Parse ``s3://BUCKET`` or ``s3://BUCKET/PREFIX``.

        Raises:
            ValueError: when ``url`` is not such a URL.
        """
        scheme, sep, rest = url.partition("://")
        if scheme != "s3" or not sep:
            raise ValueError(f"not an s3:// URL: {url!r}")
        bucket, _, prefix = rest.partition("/")
        if not 3 <= len(bucket) <= 63 or not all(
            (c.isascii() and (c.islower() or c.isdigit())) or c in ".-" for c in bucket
        ):
            raise ValueError(
                f"invalid S3 bucket name {bucket!r} in {url!r} "
                "(3-63 characters: lowercase letters, digits, '.' and '-')"
            )
        prefix = prefix.strip("/")
        if ".." in prefix.split("/") or "//" in prefix:
            raise ValueError(f"invalid S3 key prefix {prefix!r} in {url!r}")
        return cls(bucket=bucket, prefix=f"{prefix}/" if prefix else "")


@dataclass(frozen=True, slots=True, kw_only=True)
class S3Settings:
    """How to reach S3. None means "from the standard AWS chain" (environment, config files)."""

    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    max_attempts: int = 3
    retry_mode: Literal["legacy", "standard", "adaptive"] = "standard"
    max_pool_connections: int = 32


def _parse_timestamp(value: Any) -> dt.datetime:
    """botocore's timestamp parser, without dateutil for the two shapes S3 sends.

    Every response carries one (``Last-Modified``, e.g. ``Wed, 21 Oct 2015 07:28:00 GMT``;
    listings ``2015-10-21T07:28:00.000Z``) and dateutil spends ~10 % of a small GET's CPU on
    it. Same values (timezone-aware UTC); anything else goes to botocore's parser.
    """
    if isinstance(value, str):
        try:
            if value.endswith(" GMT"):
                return email.utils.parsedate_to_datetime(value)
            if value.endswith("Z") and "T" in value:
                return dt.datetime.fromisoformat(value)
        except (TypeError, ValueError):
            pass
    parsed: dt.datetime = parse_timestamp(value)
    return parsed


def make_s3_client(settings: S3Settings) -> Any:
    """A thread-safe boto3 S3 client with bounded timeouts and retries."""
    config = Config(
        connect_timeout=settings.connect_timeout_s,
        read_timeout=settings.read_timeout_s,
        retries={"mode": settings.retry_mode, "max_attempts": settings.max_attempts},
        max_pool_connections=settings.max_pool_connections,
        # Path-style works with every S3-compatible server (SeaweedFS, MinIO) and with AWS.
        s3={"addressing_style": "path"},
    )
    core = botocore.session.get_session()
    core.get_component("response_parser_factory").set_parser_defaults(
        timestamp_parser=_parse_timestamp
    )
    session = boto3.session.Session(
        botocore_session=core,
        aws_access_key_id=settings.access_key_id,
        aws_secret_access_key=settings.secret_access_key,
        aws_session_token=settings.session_token,
        region_name=settings.region,
    )
    return session.client("s3", endpoint_url=settings.endpoint_url, config=config)


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _raise_storage_error(exc: Exception, what: str, bucket: str) -> NoReturn:
    if isinstance(exc, ClientError):
        code = _code(exc)
        if code == "NoSuchBucket":
            raise StorageError(f"{what}: S3 bucket {bucket!r} does not exist") from exc
        message = exc.response.get("Error", {}).get("Message", "") or str(exc)
        raise StorageError(f"{what}: S3 error {code}: {message}") from exc
    raise StorageError(f"{what}: {exc}") from exc


def check_bucket(client: Any, bucket: str) -> None:
    """Fail clearly when ``bucket`` does not exist or cannot be reached.

    Raises:
        StorageError: naming the bucket and the cause.
    """
    try:
        client.head_bucket(Bucket=bucket)
    except ClientError as exc:
        if _code(exc) in {"404", "NoSuchBucket", "NotFound"}:
            raise StorageError(f"S3 bucket {bucket!r} does not exist") from exc
        _raise_storage_error(exc, f"cannot access S3 bucket {bucket!r}", bucket)
    except BotoCoreError as exc:
        _raise_storage_error(exc, f"cannot reach S3 for bucket {bucket!r}", bucket)


class _BodyReader(ReadingRaw):
    """A botocore streaming body as a raw file; transport failures become StorageError."""

    def __init__(self, body: Any, what: str, bucket: str) -> None:
        self._body = body
        self._what = what
        self._bucket = bucket

    def read(self, size: int | None = -1) -> bytes:
        try:
            data: bytes = self._body.read(None if size is None or size < 0 else size)
        except (BotoCoreError, ClientError, OSError) as exc:
            _raise_storage_error(exc, self._what, self._bucket)
        return data

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._body.close()
        super().close()


class _S3Base:
    def __init__(self, *, client: Any, location: S3Location) -> None:
        self._client = client
        self._bucket = location.bucket
        self._prefix = location.prefix

    def _what(self, op: str, key: str) -> str:
        return f"S3 {op} s3://{self._bucket}/{key} failed"

    def _exists(self, key: str) -> bool:
        try:
            self._client.head_object(Bucket=self._bucket, Key=key)
        except ClientError as exc:
            if _code(exc) in _NOT_FOUND_CODES:
                return False
            _raise_storage_error(exc, self._what("HEAD", key), self._bucket)
        except BotoCoreError as exc:
            _raise_storage_error(exc, self._what("HEAD", key), self._bucket)
        return True

    def _get(self, key: str) -> Any | None:
        try:
            return self._client.get_object(Bucket=self._bucket, Key=key)
        except ClientError as exc:
            if _code(exc) in _NOT_FOUND_CODES:
                return None
            _raise_storage_error(exc, self._what("GET", key), self._bucket)
        except BotoCoreError as exc:
            _raise_storage_error(exc, self._what("GET", key), self._bucket)

    def _delete(self, key: str) -> None:
        try:
            self._client.delete_object(Bucket=self._bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            _raise_storage_error(exc, self._what("DELETE", key), self._bucket)

    def _list(self, prefix: str) -> Iterator[dict[str, Any]]:
        try:
            paginator = self._client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self._bucket, Prefix=prefix):
                yield from page.get("Contents", [])
        except (ClientError, BotoCoreError) as exc:
            _raise_storage_error(exc, self._what("LIST", prefix), self._bucket)


class S3BlobStore(_S3Base):
    """Blobs as objects ``<prefix>v1/cas/<hash>/<aa>/<hexdigest>-<size>``.

    Args:
        client: a boto3 S3 client (:func:`make_s3_client`); shared, thread-safe.
        location: bucket and key prefix.
    """

    def __init__(self, *, client: Any, location: S3Location) -> None:
        super().__init__(client=client, location=location)
        # One HEAD per ref costs a round trip and ~2-3 ms of client CPU; overlapping them
        # keeps a FindMissingBlobs of a few hundred refs well under a second.
        self._heads = ThreadPoolExecutor(max_workers=16, thread_name_prefix="s3-head")

    def _key(self, ref: BlobRef) -> str:
        return self._prefix + blob_name(ref)

    def missing(self, refs: Sequence[BlobRef]) -> list[BlobRef]:
        if len(refs) <= 1:
            return [ref for ref in refs if not self._exists(self._key(ref))]
        present = list(self._heads.map(lambda ref: self._exists(self._key(ref)), refs))
        return [ref for ref, here in zip(refs, present, strict=True) if not here]

    def open_read(self, ref: BlobRef) -> BinaryIO | None:
        key = self._key(ref)
        response = self._get(key)
        if response is None:
            return None
        raw = _BodyReader(response["Body"], self._what("GET", key), self._bucket)
        return io.BufferedReader(raw, buffer_size=256 * 1024)

    def write(self, ref: BlobRef, stored: Iterable[StoredChunk]) -> None:
        key = self._key(ref)
        # Consume the whole stream before the first request: if iterating raises
        # (verification failed), S3 never sees a byte.
        with tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY) as spool:
            total = 0
            for chunk in stored:
                spool.write(chunk)  # views too: boto3 then reads the spool (bytes, a file)
                total += len(chunk)
            spool.seek(0)
            try:
                if total <= _SPOOL_IN_MEMORY:
                    self._client.put_object(Bucket=self._bucket, Key=key, Body=spool.read())
                else:
                    self._client.upload_fileobj(spool, self._bucket, key, Config=_TRANSFER)
            except (ClientError, BotoCoreError) as exc:
                _raise_storage_error(exc, self._what("PUT", key), self._bucket)
            except Exception as exc:
                # boto3's transfer manager wraps failures in its own exception types.
                if type(exc).__module__.startswith(("boto3", "s3transfer")):
                    _raise_storage_error(exc, self._what("PUT", key), self._bucket)
                raise

    def delete(self, ref: BlobRef) -> None:
        self._delete(self._key(ref))

    def iterate(self) -> Iterator[BlobInfo]:
        for obj in self._list(self._prefix + CAS_PREFIX):
            ref = parse_blob_name(obj["Key"][len(self._prefix) :])
            if ref is not None:
                yield BlobInfo(
                    ref=ref,
                    stored_bytes=int(obj["Size"]),
                    modified_unix=obj["LastModified"].timestamp(),
                )


class S3ManifestStore(_S3Base):
    """Manifest documents as objects ``<prefix>v1/ns/<namespace>/ac/<hash>/<aa>/<hexkey>``.

    Args:
        client: a boto3 S3 client (:func:`make_s3_client`); shared, thread-safe.
        location: bucket and key prefix.
        lean_get: read documents with :class:`~._s3_fast.SignedGet` when the client allows
            (False: every read through boto3, as a baseline).
        clock: monotonic seconds (when the lean GET may be tried again after a fallback).
    """

    def __init__(
        self,
        *,
        client: Any,
        location: S3Location,
        lean_get: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(client=client, location=location)
        self._lean = (
            SignedGet.for_client(client, location.bucket, clock=clock) if lean_get else None
        )

    @property
    def lean_get(self) -> SignedGet | None:
        """The lean reader in use (None: boto3 reads everything)."""
        return self._lean

    def _key(self, namespace: str, hash_name: HashName, key: Digest) -> str:
        return self._prefix + manifest_name(namespace, hash_name, key)

    def get(self, namespace: str, hash_name: HashName, key: Digest) -> bytes | None:
        object_key = self._key(namespace, hash_name, key)
        if self._lean is not None:
            answer = self._lean.get(object_key)
            if answer is not FALL_BACK:
                return answer
        response = self._get(object_key)
        if response is None:
            return None
        body = response["Body"]
        try:
            return bytes(body.read())
        except (BotoCoreError, ClientError, OSError) as exc:
            _raise_storage_error(exc, self._what("GET", object_key), self._bucket)
        finally:
            body.close()

    def get_nowait(
        self, namespace: str, hash_name: HashName, key: Digest
    ) -> Literal[WouldBlock.WOULD_BLOCK]:
        """Every S3 read is a network round trip: always :data:`WOULD_BLOCK`."""
        del namespace, hash_name, key
        return WOULD_BLOCK

    def put_if_absent(
        self, namespace: str, hash_name: HashName, key: Digest, document: bytes
    ) -> bool:
        object_key = self._key(namespace, hash_name, key)
        for _ in range(5):
            try:
                self._client.put_object(
                    Bucket=self._bucket, Key=object_key, Body=document, IfNoneMatch="*"
                )
            except ClientError as exc:
                code = _code(exc)
                if code == _PRECONDITION_FAILED:
                    return False
                if code == _CONDITIONAL_CONFLICT:
                    continue
                _raise_storage_error(exc, self._what("PUT", object_key), self._bucket)
            except BotoCoreError as exc:
                _raise_storage_error(exc, self._what("PUT", object_key), self._bucket)
            return True
        raise StorageError(
            f"{self._what('PUT', object_key)}: conditional write kept conflicting; retry later"
        )

    def replace(self, namespace: str, hash_name: HashName, key: Digest, document: bytes) -> None:
        object_key = self._key(namespace, hash_name, key)
        try:
            self._client.put_object(Bucket=self._bucket, Key=object_key, Body=document)
        except (ClientError, BotoCoreError) as exc:
            _raise_storage_error(exc, self._what("PUT", object_key), self._bucket)

    def delete(self, namespace: str, hash_name: HashName, key: Digest) -> None:
        self._delete(self._key(namespace, hash_name, key))

    def iterate(self, namespace: str | None = None) -> Iterator[ManifestInfo]:
        prefix = self._prefix + NS_PREFIX
        if namespace is not None:
            check_namespace(namespace)
            prefix += f"{namespace}/"
        for obj in self._list(prefix):
            parsed = parse_manifest_name(obj["Key"][len(self._prefix) :])
            if parsed is None:
                continue
            yield ManifestInfo(
                namespace=parsed.namespace,
                hash_name=parsed.hash_name,
                key=parsed.key,
                stored_bytes=int(obj["Size"]),
                modified_unix=obj["LastModified"].timestamp(),
            )
