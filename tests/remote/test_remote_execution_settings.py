"""``--remote-exec`` > ``HAZ_REMOTE_EXEC`` > ``remote.execute``, and ``--remote-jobs`` (RX-001).

Spec coverage: RX-001 — the policy's precedence and default (``never``), its messages, and a
workspace ``remote.execute`` without a remote being ``never``.
"""

from __future__ import annotations

import pytest

from hazremote.domain.model import RemotePolicy, RemoteSettings
from hazremote.errors import UsageError
from hazremote.remote.settings import (
    RemoteConfig,
    RemoteFlags,
    resolve_remote,
    resolve_remote_execution,
)


def a_remote() -> RemoteConfig:
    config = resolve_remote(
        RemoteFlags(url="grpc://cache:7070"), environ={}, config=RemoteSettings()
    )
    assert config is not None
    return config


@pytest.mark.parametrize(
    ("flag", "env", "configured", "expected"),
    [
        (None, None, None, RemotePolicy.NEVER),
        (None, None, RemotePolicy.AUTO, RemotePolicy.AUTO),
        (None, "always", RemotePolicy.AUTO, RemotePolicy.ALWAYS),
        ("never", "always", RemotePolicy.AUTO, RemotePolicy.NEVER),
        ("auto", None, RemotePolicy.ALWAYS, RemotePolicy.AUTO),
        (None, "", RemotePolicy.ALWAYS, RemotePolicy.ALWAYS),  # empty is unset
    ],
)
def test_the_flag_beats_the_environment_beats_the_workspace(
    flag: str | None, env: str | None, configured: RemotePolicy | None, expected: RemotePolicy
) -> None:
    environ = {} if env is None else {"HAZ_REMOTE_EXEC": env}
    resolved = resolve_remote_execution(
        flag,
        remote_jobs=None,
        environ=environ,
        config=RemoteSettings(execute=configured, platform={"pool": "large"}),
        remote=a_remote(),
    )
    assert resolved.policy is expected
    assert resolved.platform == {"pool": "large"}


@pytest.mark.parametrize(
    ("flag", "env", "message"),
    [
        (
            "sometimes",
            None,
            "--remote-exec: invalid value 'sometimes' (expected never, auto, always)",
        ),
        (None, "yes", "HAZ_REMOTE_EXEC: invalid value 'yes' (expected never, auto, always)"),
    ],
)
def test_an_invalid_policy_names_where_it_came_from(
    flag: str | None, env: str | None, message: str
) -> None:
    environ = {} if env is None else {"HAZ_REMOTE_EXEC": env}
    with pytest.raises(UsageError) as caught:
        resolve_remote_execution(
            flag, remote_jobs=None, environ=environ, config=RemoteSettings(), remote=a_remote()
        )
    assert str(caught.value) == message


def test_asking_for_remote_execution_without_a_remote_is_an_error() -> None:
    with pytest.raises(UsageError) as caught:
        resolve_remote_execution(
            "always", remote_jobs=None, environ={}, config=RemoteSettings(), remote=None
        )
    assert str(caught.value) == (
        "--remote-exec always needs a remote: --remote URL, HAZ_REMOTE_URL or remote.url"
    )


def test_the_workspace_setting_without_a_remote_is_never() -> None:
    """Turning the remote off (``--remote-mode off``) must not break the run."""
    resolved = resolve_remote_execution(
        None,
        remote_jobs=None,
        environ={},
        config=RemoteSettings(execute=RemotePolicy.ALWAYS),
        remote=None,
    )
    assert resolved.policy is RemotePolicy.NEVER


def test_remote_jobs_is_checked() -> None:
    remote = a_remote()
    ok = resolve_remote_execution(
        "auto", remote_jobs=8, environ={}, config=RemoteSettings(), remote=remote
    )
    assert ok.remote_jobs == 8
    with pytest.raises(UsageError, match="--remote-jobs must be at least 1, got 0"):
        resolve_remote_execution(
            "auto", remote_jobs=0, environ={}, config=RemoteSettings(), remote=remote
        )
    with pytest.raises(UsageError, match=r"--remote-jobs needs remote execution"):
        resolve_remote_execution(
            None, remote_jobs=4, environ={}, config=RemoteSettings(), remote=remote
        )
