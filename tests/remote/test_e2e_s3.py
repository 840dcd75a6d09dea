"""Two clones share results through a real ``haz-cache-service`` whose storage is real S3.

The chain is the production one: ``haz`` → gRPC → ``haz-cache-service`` subprocess →
boto3 → SeaweedFS (a real S3 server, one per test process). Nothing is faked.

Spec coverage: RC-001/RC-008/CACHE-023 (the second clone, at another path with an empty
local cache, gets only ``remote-cache`` hits with byte-identical outputs, modes and streams),
SPEC §5 (``--remote``/``--remote-namespace`` flags), SVC-001 (the S3 backend behind the
service), SVC-002 (objects land in the bucket under ``<prefix>/v1/cas/<hash>/<aa>/…`` and
``<prefix>/v1/ns/<namespace>/ac/<hash>/<aa>/<key>``).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hazremote.domain.digest import digest_bytes
from hazremote.domain.model import HashName
from tests.remote.test_run_remote import files, snapshot, warning_lines
from tests.run.conftest import HazRunner, WorkspaceMaker
from tests.support.fixtures import (
    BUCKET,
    ServiceProcess,
    s3_client_env,
    seaweed,  # noqa: F401 - the shared session fixture
    service_process,
)
from tests.support.seaweedfs import REGION, SeaweedS3

pytestmark = pytest.mark.e2e

NAMESPACE = "team-a"
#: Nothing fails here: generous deadlines, so a loaded machine cannot turn a hit into a miss.
PATIENT = "connect_s=10,lookup_s=10,transfer_s=30,upload_drain_s=30"


@pytest.fixture
def prefix() -> str:
    """A key prefix of its own, so parallel workers and tests never see each other's objects."""
    return f"e2e-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def s3_service(tmp_path: Path, seaweed: SeaweedS3, prefix: str) -> Iterator[ServiceProcess]:  # noqa: F811
    """``haz-cache-service`` storing in ``s3://BUCKET/PREFIX`` on the real SeaweedFS, with small
    batch/stream bounds so the 300 KB output streams (RC-006)."""
    with service_process(
        tmp_path / "service.log",
        [
            "--storage",
            f"s3://{BUCKET}/{prefix}",
            "--s3-endpoint",
            seaweed.endpoint_url,
            "--s3-region",
            REGION,
            "--max-batch-total-size",
            "64KiB",
            "--stream-chunk-size",
            "32KiB",
        ],
        env=s3_client_env(),
    ) as service:
        yield service


def bucket_names(seaweed: SeaweedS3, prefix: str) -> set[str]:  # noqa: F811
    """Every object key under ``prefix/``, relative to it."""
    client = seaweed.client()
    names: set[str] = set()
    for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=BUCKET, Prefix=f"{prefix}/"
    ):
        names.update(obj["Key"][len(prefix) + 1 :] for obj in page.get("Contents", []))
    return names


def test_two_clones_share_results_through_the_service_on_s3(
    haz: HazRunner,
    make_workspace: WorkspaceMaker,
    s3_service: ServiceProcess,
    seaweed: SeaweedS3,  # noqa: F811
    prefix: str,
) -> None:
    """RC-001/RC-008/CACHE-023 over real S3: clone two (other path, empty local cache) gets
    only remote-cache hits, byte-identical outputs, modes and streams; SVC-002: the bucket
    holds the blobs and the two manifests under the v1 layout of the chosen namespace."""
    first_root = make_workspace(files(), name="clone-one")
    second_root = make_workspace(files(), name="clone-two")
    flags = ("--remote", s3_service.url, "--remote-namespace", NAMESPACE)
    env = {"HAZ_REMOTE_TIMEOUTS": PATIENT}
    assert bucket_names(seaweed, prefix) == set()

    first = haz("run", "--workspace", "--output", "buffered", *flags, cwd=first_root, env=env)
    assert first.code == 0, first.stderr
    assert first.sources() == {"app:build": "fresh", "lib:build": "fresh"}
    assert warning_lines(first.stderr) == []

    second = haz("run", "--workspace", "--output", "buffered", *flags, cwd=second_root, env=env)
    assert second.code == 0, second.stderr
    assert second.sources() == {"app:build": "remote-cache", "lib:build": "remote-cache"}
    assert second.stdout == first.stdout
    assert b"built \xff\xfe invalid utf8\npartial" in second.stdout
    assert "a warning" in second.stderr
    assert snapshot(second_root) == snapshot(first_root)
    assert warning_lines(second.stderr) == []

    names = bucket_names(seaweed, prefix)
    manifests = {n for n in names if n.startswith("v1/ns/")}
    blobs = names - manifests
    assert len(manifests) == 2
    assert all(
        re.fullmatch(rf"v1/ns/{NAMESPACE}/ac/blake3/([0-9a-f]{{2}})/\1[0-9a-f]{{62}}", n)
        for n in manifests
    ), manifests
    assert all(re.fullmatch(r"v1/cas/blake3/([0-9a-f]{2})/\1[0-9a-f]{62}-\d+", n) for n in blobs), (
        blobs
    )
    for rel in ("lib/dist/app.bin", "lib/dist/run.sh", "app/out.txt"):
        data = (first_root / rel).read_bytes()
        hexdigest = digest_bytes(HashName.BLAKE3, data).hex
        assert f"v1/cas/blake3/{hexdigest[:2]}/{hexdigest}-{len(data)}" in blobs, rel


def test_a_namespace_is_isolated_on_s3(
    haz: HazRunner,
    make_workspace: WorkspaceMaker,
    s3_service: ServiceProcess,
    seaweed: SeaweedS3,  # noqa: F811
    prefix: str,
) -> None:
    """SPEC §5/SVC-002: results stored under one namespace are not hits in another; the
    second namespace's manifests get their own v1/ns/<namespace>/ objects in the bucket."""
    env = {"HAZ_REMOTE_TIMEOUTS": PATIENT}
    seed = make_workspace(files(), name="seed")
    assert haz("run", "--workspace", "--remote", s3_service.url, cwd=seed, env=env).code == 0
    other = make_workspace(files(), name="other")
    result = haz(
        "run",
        "--workspace",
        "--remote",
        s3_service.url,
        "--remote-namespace",
        NAMESPACE,
        cwd=other,
        env=env,
    )
    assert result.code == 0, result.stderr
    assert result.sources() == {"app:build": "fresh", "lib:build": "fresh"}
    namespaces = {n.split("/")[2] for n in bucket_names(seaweed, prefix) if n.startswith("v1/ns/")}
    assert namespaces == {"main", NAMESPACE}
