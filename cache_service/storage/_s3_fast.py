"""A lean SigV4-signed GET for small S3 objects (manifest reads), beside boto3.

Spec coverage:
* SVC-001 — :class:`SignedGet` reads one object with its boto3 client's settings.
* RC-003 — only ``200`` and ``404 NoSuchKey`` are answered; the rest is :data:`FALL_BACK`.
Out of scope: writes, listings, large bodies; clients it cannot mimic (``for_client`` → None).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from typing import Any, Final, Literal
from urllib.parse import quote, urlsplit

import urllib3
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.httpsession import get_cert_path
from botocore.utils import get_environ_proxies

__all__ = ["FALL_BACK", "REST_S", "Fallback", "SignedGet"]

#: Seconds the lean path stays unused after a read it could not answer.
REST_S = 5.0
#: S3's error code of an absent key (a 404 naming another code, e.g. NoSuchBucket, falls back).
_NO_SUCH_KEY = b"<Code>NoSuchKey</Code>"
#: A key with characters that need escaping; its presigned URL must be the one we build.
_PROBE_KEY = "haz probe/ä+=%~!*'()"


class Fallback(enum.Enum):
    """The answer of a lean read that could not decide: read through boto3 instead."""

    FALL_BACK = "fall back"


FALL_BACK: Final = Fallback.FALL_BACK


def _quoted(key: str) -> str:
    """An object key as botocore puts it in a path (``/`` and ``~`` kept, UTF-8 escaped)."""
    return quote(key, safe="/~")


class SignedGet:
    """SigV4-signed GETs of one bucket's objects over a urllib3 connection pool.

    Args:
        base_url: ``scheme://host[:port]/[path/]bucket/`` — the object key follows.
        region: the signing region.
        credentials: a botocore credentials object (``get_frozen_credentials()`` per request).
        pool: the urllib3 pool of ``base_url``'s host (timeouts and TLS settings included).
        clock: monotonic seconds (for the rest after a fallback).
    """

    def __init__(
        self,
        *,
        base_url: str,
        region: str,
        credentials: Any,
        pool: urllib3.HTTPConnectionPool,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._base_url = base_url
        self._base_path = urlsplit(base_url).path
        self._region = region
        self._credentials = credentials
        self._pool = pool
        self._clock = clock
        self._resting_until = float("-inf")
        #: Reads answered by the lean path, and reads handed back to boto3 (diagnostics).
        self.answered = 0
        self.fell_back = 0

    @classmethod
    def for_client(
        cls, client: Any, bucket: str, *, clock: Callable[[], float] = time.monotonic
    ) -> SignedGet | None:
        """The lean GET for ``bucket`` as ``client`` reaches it, or None when ``client`` is
        configured in a way this class does not reproduce (then boto3 does every read)."""
        try:
            return cls._for_client(client, bucket, clock)
        except Exception:  # e.g. no credentials: boto3 reads (and reports the error)
            return None

    @classmethod
    def _for_client(cls, client: Any, bucket: str, clock: Callable[[], float]) -> SignedGet | None:
        meta = client.meta
        config = meta.config
        if (config.s3 or {}).get("addressing_style") != "path":
            return None
        if config.signature_version not in (None, "s3v4", "v4"):  # e.g. botocore.UNSIGNED
            return None
        if config.proxies or getattr(config, "client_cert", None):
            return None
        # botocore keeps the credentials of a client's session on its signer; this accessor
        # is botocore's own (private) one. No credentials: anonymous access, boto3 only.
        get_credentials = getattr(client, "_get_credentials", None)
        credentials = get_credentials() if callable(get_credentials) else None
        if credentials is None:
            return None
        endpoint = urlsplit(meta.endpoint_url)
        if endpoint.scheme not in ("http", "https") or endpoint.query or not endpoint.hostname:
            return None
        if get_environ_proxies(meta.endpoint_url).get(endpoint.scheme):
            return None  # botocore would go through a proxy: so must we, so we don't
        base_url = f"{endpoint.scheme}://{endpoint.netloc}{endpoint.path.rstrip('/')}/{bucket}/"
        # The URL botocore itself would use for a key (endpoint rules, escaping): ours must
        # be the same, or this client is one we do not understand.
        presigned = client.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": _PROBE_KEY}
        )
        if presigned.partition("?")[0] != base_url + _quoted(_PROBE_KEY):
            return None
        tls: dict[str, Any] = {}
        if endpoint.scheme == "https":
            # The value botocore resolved (verify=, AWS_CA_BUNDLE, ca_bundle, certifi).
            verify = getattr(getattr(client, "_endpoint", None), "http_session", None)
            verify = getattr(verify, "_verify", None)
            if verify is None:
                return None
            if verify is False:
                tls = {"cert_reqs": "CERT_NONE"}
            else:
                tls = {"cert_reqs": "CERT_REQUIRED", "ca_certs": get_cert_path(verify)}
        pool = urllib3.connection_from_url(
            meta.endpoint_url,
            maxsize=config.max_pool_connections,
            block=False,
            timeout=urllib3.Timeout(connect=config.connect_timeout, read=config.read_timeout),
            retries=False,
            **tls,
        )
        return cls(
            base_url=base_url,
            region=meta.region_name,
            credentials=credentials,
            pool=pool,
            clock=clock,
        )

    def get(self, key: str) -> bytes | Literal[Fallback.FALL_BACK] | None:
        """The object's bytes, None when S3 says NoSuchKey, else :data:`FALL_BACK`."""
        if self._clock() < self._resting_until:
            return FALL_BACK
        path = _quoted(key)
        try:
            request = AWSRequest(method="GET", url=self._base_url + path)
            S3SigV4Auth(self._credentials.get_frozen_credentials(), "s3", self._region).add_auth(
                request
            )
            response = self._pool.urlopen(
                "GET",
                self._base_path + path,
                headers=dict(request.headers.items()),
                retries=False,
                redirect=False,
                assert_same_host=False,
                decode_content=False,
            )
            status, body = response.status, response.data
        except Exception:  # any failure: boto3 reads again and reports it
            return self._fall_back()
        if status == 200:
            self.answered += 1
            return bytes(body)
        if status == 404 and _NO_SUCH_KEY in body:
            self.answered += 1
            return None
        return self._fall_back()

    def _fall_back(self) -> Literal[Fallback.FALL_BACK]:
        self.fell_back += 1
        self._resting_until = self._clock() + REST_S
        return FALL_BACK
