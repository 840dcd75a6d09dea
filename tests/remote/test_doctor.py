"""``haz doctor`` against a real ``haz-cache-service`` and against nothing.

Spec coverage: SPEC §5 `haz doctor` (config, local cache health, remote reachability and
latency, server version and capabilities, clock skew, token as the server sees it),
EXEC-021 (exit 1 when a check fails).
"""

from __future__ import annotations

import pytest

from tests.remote.test_run_cache_service import Service, service  # noqa: F401 - fixture
from tests.run.conftest import HazRunner, WorkspaceMaker

pytestmark = pytest.mark.e2e

WORKSPACE = {".haz/workspace.yml": "", "haz.yml": "tasks:\n  t: {command: [true]}\n"}


def test_doctor_reports_a_healthy_setup(
    haz: HazRunner,
    make_workspace: WorkspaceMaker,
    service: Service,  # noqa: F811
) -> None:
    root = make_workspace(WORKSPACE)
    result = haz("doctor", "--remote", service.url, cwd=root)
    assert result.code == 0, result.out
    lines = result.out.splitlines()
    assert lines[0].startswith("ok    config: ")
    assert any(line.startswith("ok    local cache: ") for line in lines)
    assert any("reachable" in line and "ms round trip" in line for line in lines)
    assert any(line.startswith("ok    server version: ") for line in lines)
    assert any("workspace uses blake3" in line and line.startswith("ok") for line in lines)
    assert any(line.startswith("ok    clock skew: ") for line in lines)
    assert "-0.0" not in result.out
    (limits,) = (line for line in lines if line.startswith("ok    limits: "))
    assert "max blob 4.0 GiB" in limits  # the service's default, not a raw byte count
    assert any("open access" in line for line in lines)


def test_doctor_fails_when_the_remote_is_unreachable(
    haz: HazRunner, make_workspace: WorkspaceMaker
) -> None:
    root = make_workspace(WORKSPACE)
    result = haz("doctor", "--remote", "grpc://127.0.0.1:1", cwd=root)
    assert result.code == 1
    assert "FAIL  remote: 127.0.0.1:1: UNAVAILABLE" in result.out


def test_doctor_reports_a_broken_config_as_a_failed_check(
    haz: HazRunner, make_workspace: WorkspaceMaker
) -> None:
    root = make_workspace({".haz/workspace.yml": "bogus: 1\n"})
    result = haz("doctor", cwd=root)
    assert result.code == 1
    assert result.out.startswith("FAIL  config: ")
    assert "unknown key 'bogus'" in result.out
