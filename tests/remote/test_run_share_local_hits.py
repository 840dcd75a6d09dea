"""Turning on ``--remote`` in a checkout whose local cache is warm (issue 12).

Spec coverage:
* RC-002 — in ``read-write`` mode a local hit the remote lacks is uploaded in the
  background, so the service ends up with every entry of the run (a clone with an empty
  local cache then gets only remote hits).
* RC-002/RC-001 — keys the remote is known to hold (confirmed by a lookup, a remote hit or a
  successful upload) are remembered under ``.haz/`` per remote URL and namespace: a later
  fully local-hit run makes no remote call for them (no upload, no lookup).
* RC-002 — ``read-only`` never uploads a local hit.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.remote.test_run_cache_service import Service, env_for
from tests.remote.test_run_remote import files, snapshot, warning_lines
from tests.run.conftest import HazRunner, WorkspaceMaker
from tests.support.fixtures import service_process

pytestmark = pytest.mark.e2e

_CALLS = re.compile(r"(ManifestStore|ContentStore)/(\w+)")


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    store = tmp_path / "service-store"
    with service_process(tmp_path / "service.log", ["--storage", str(store)]) as running:
        yield Service(process=running.process, url=running.url, store=store, log=running.log)


def calls(service: Service) -> list[str]:
    """The cache RPCs the service logged so far, in order (one access event per RPC)."""
    return ["/".join(m.groups()) for m in _CALLS.finditer(service.log.read_text())]


def test_a_warm_local_cache_is_uploaded_once_and_then_costs_no_remote_call(
    haz: HazRunner, make_workspace: WorkspaceMaker, service: Service
) -> None:
    root = make_workspace(files(), name="warm")
    local_only = haz("run", "--workspace", cwd=root)
    assert local_only.code == 0, local_only.stderr
    assert set(local_only.sources().values()) == {"fresh"}

    # Old behaviour: every task is a local hit, nothing is uploaded.
    shared = haz("run", "--workspace", cwd=root, env=env_for(service))
    assert shared.code == 0, shared.stderr
    assert set(shared.sources().values()) == {"local-cache"}
    assert warning_lines(shared.stderr) == []
    assert "ManifestStore/PutManifest" in calls(service)

    clone = make_workspace(files(), name="clone")  # empty local cache, other path
    cloned = haz("run", "--workspace", cwd=clone, env=env_for(service))
    assert cloned.code == 0, cloned.stderr
    assert cloned.sources() == {"app:build": "remote-cache", "lib:build": "remote-cache"}
    assert snapshot(clone) == snapshot(root)

    before = calls(service)
    again = haz("run", "--workspace", cwd=root, env=env_for(service))
    assert again.code == 0, again.stderr
    assert set(again.sources().values()) == {"local-cache"}
    assert calls(service) == before  # known there: no lookup, no upload


def test_read_only_mode_never_uploads_a_local_hit(
    haz: HazRunner, make_workspace: WorkspaceMaker, service: Service
) -> None:
    root = make_workspace(files(), name="warm")
    assert haz("run", "--workspace", cwd=root).code == 0
    result = haz("run", "--workspace", "--remote-mode", "read-only", cwd=root, env=env_for(service))
    assert result.code == 0, result.stderr
    assert not [
        c for c in calls(service) if c.endswith(("PutManifest", "UpdateBlobs", "WriteBlob"))
    ]
