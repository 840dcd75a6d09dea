"""Remote settings resolution (SPEC §5) and the circuit breaker (RC-003), as pure functions."""

from __future__ import annotations

from pathlib import Path

import pytest

from hazremote.domain.model import RemoteMode, RemoteSettings
from hazremote.errors import UsageError
from hazremote.remote import (
    BreakerState,
    CircuitBreaker,
    RemoteFlags,
    RemoteTimeouts,
    parse_remote_url,
    parse_timeouts,
    resolve_remote,
)

CONFIG = RemoteSettings(
    url="grpc://config:1", namespace="cfg", mode=RemoteMode.READ_ONLY, token_env="MY_TOKEN"
)


@pytest.mark.parametrize(
    ("flags", "environ", "config", "expected"),
    [
        # URL: flag > env > config
        (RemoteFlags(url="grpc://flag:1"), {"HAZ_REMOTE_URL": "grpc://env:1"}, CONFIG, "flag:1"),
        (RemoteFlags(), {"HAZ_REMOTE_URL": "grpc://env:1"}, CONFIG, "env:1"),
        (RemoteFlags(), {}, CONFIG, "config:1"),
        (RemoteFlags(), {"HAZ_REMOTE_URL": ""}, CONFIG, "config:1"),  # empty counts as unset
    ],
)
def test_url_resolves_flag_over_env_over_config(
    flags: RemoteFlags, environ: dict[str, str], config: RemoteSettings, expected: str
) -> None:
    """SPEC §5: each item resolves flag > environment > config."""
    resolved = resolve_remote(flags, environ=environ, config=config)
    assert resolved is not None
    assert resolved.target == expected


def test_mode_and_namespace_resolve_per_item() -> None:
    """SPEC §5: mode and namespace resolve independently of where the URL came from."""
    env = {"HAZ_REMOTE_MODE": "read-write", "HAZ_REMOTE_NAMESPACE": "envns"}
    resolved = resolve_remote(RemoteFlags(url="grpc://h:2"), environ=env, config=CONFIG)
    assert resolved is not None
    assert (resolved.mode, resolved.namespace) == (RemoteMode.READ_WRITE, "envns")
    flagged = resolve_remote(
        RemoteFlags(mode="read-only", namespace="flagns"), environ=env, config=CONFIG
    )
    assert flagged is not None
    assert (flagged.mode, flagged.namespace) == (RemoteMode.READ_ONLY, "flagns")
    from_config = resolve_remote(RemoteFlags(), environ={}, config=CONFIG)
    assert from_config is not None
    assert (from_config.mode, from_config.namespace) == (RemoteMode.READ_ONLY, "cfg")


def test_defaults_are_read_write_and_main_when_a_url_is_set() -> None:
    """SPEC §5: mode defaults to read-write with a URL; namespace defaults to main."""
    resolved = resolve_remote(RemoteFlags(url="grpc://h:7070"), environ={}, config=RemoteSettings())
    assert resolved is not None
    assert (resolved.mode, resolved.namespace, resolved.token) == (
        RemoteMode.READ_WRITE,
        "main",
        None,
    )
    assert resolved.writes


def test_no_url_or_mode_off_means_no_remote() -> None:
    """SPEC §5: no URL anywhere, or mode off (from any source), disables the remote."""
    assert resolve_remote(RemoteFlags(), environ={}, config=RemoteSettings()) is None
    assert (
        resolve_remote(RemoteFlags(url="grpc://h:1", mode="off"), environ={}, config=CONFIG) is None
    )
    assert resolve_remote(RemoteFlags(), environ={"HAZ_REMOTE_MODE": "off"}, config=CONFIG) is None
    off = RemoteSettings(url="grpc://h:1", mode=RemoteMode.OFF)
    assert resolve_remote(RemoteFlags(), environ={}, config=off) is None
    # ... but a flag turns it back on over the config's off.
    assert resolve_remote(RemoteFlags(mode="read-only"), environ={}, config=off) is not None


def test_token_from_haz_remote_token_else_the_configured_variable() -> None:
    """SPEC §5: HAZ_REMOTE_TOKEN, else the variable named by remote.token_env."""
    both = {"HAZ_REMOTE_TOKEN": "direct", "MY_TOKEN": "named"}
    resolved = resolve_remote(RemoteFlags(), environ=both, config=CONFIG)
    assert resolved is not None
    assert resolved.token == "direct"
    named = resolve_remote(RemoteFlags(), environ={"MY_TOKEN": "named"}, config=CONFIG)
    assert named is not None
    assert named.token == "named"


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("http://h:80", "unsupported scheme"),
        ("grpcs://h", "HOST:PORT"),
        ("h:7070", "no scheme"),
        ("grpc://h", "HOST:PORT"),
        ("grpc://h:0", "HOST:PORT"),
        ("grpc://h:99999", "HOST:PORT"),
    ],
)
def test_bad_urls_are_usage_errors_with_a_clear_message(url: str, fragment: str) -> None:
    """SPEC §5: grpc://HOST:PORT or grpcs://HOST:PORT (TLS, SEC-005), nothing else."""
    with pytest.raises(UsageError, match=fragment):
        parse_remote_url(url)


def test_bad_mode_and_namespace_name_their_source() -> None:
    """SPEC §5: an invalid mode or namespace is a usage error naming where it came from."""
    with pytest.raises(UsageError, match="HAZ_REMOTE_MODE"):
        resolve_remote(RemoteFlags(), environ={"HAZ_REMOTE_MODE": "sometimes"}, config=CONFIG)
    with pytest.raises(UsageError, match="namespace"):
        resolve_remote(RemoteFlags(namespace="a/b"), environ={}, config=CONFIG)


def test_timeouts_knob_parses_known_fields_only() -> None:
    """RC-003 tuning: HAZ_REMOTE_TIMEOUTS overrides deadlines; unknown names are errors."""
    parsed = parse_timeouts("connect_s=0.5, breaker_failures=2")
    assert parsed == RemoteTimeouts(connect_s=0.5, breaker_failures=2)
    with pytest.raises(UsageError, match="unknown"):
        parse_timeouts("bogus=1")
    with pytest.raises(UsageError, match="number"):
        parse_timeouts("lookup_s=soon")
    resolved = resolve_remote(
        RemoteFlags(url="grpc://h:1"),
        environ={"HAZ_REMOTE_TIMEOUTS": "lookup_s=0.25"},
        config=RemoteSettings(),
    )
    assert resolved is not None
    assert resolved.timeouts.lookup_s == 0.25


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _state(breaker: CircuitBreaker) -> BreakerState:
    """The breaker's state, read afresh (mypy would keep narrowing ``breaker.state``)."""
    return breaker.state


def test_breaker_opens_after_consecutive_failures_and_reprobes_after_cooldown() -> None:
    """RC-003: repeated failures open the breaker; one probe goes out after the cool-down."""
    clock = Clock()
    breaker = CircuitBreaker(failures=3, cooldown_s=10, clock=clock)
    breaker.failure()
    breaker.success()  # a success resets the count
    breaker.failure()
    breaker.failure()
    assert breaker.allow()
    assert _state(breaker) is BreakerState.CLOSED
    breaker.failure()
    assert _state(breaker) is BreakerState.OPEN
    assert not breaker.allow()
    clock.now = 9.9
    assert not breaker.allow()
    clock.now = 10.0
    assert breaker.allow()  # the one re-probe
    assert _state(breaker) is BreakerState.HALF_OPEN
    assert not breaker.allow()  # nobody else while it is out
    breaker.failure()  # probe failed: open for another cool-down
    assert _state(breaker) is BreakerState.OPEN
    assert not breaker.allow()
    clock.now = 20.0
    assert breaker.allow()
    breaker.success()  # probe succeeded: closed again, for good
    assert _state(breaker) is BreakerState.CLOSED
    assert breaker.allow()
    assert breaker.openings == 2


def test_breaker_half_open_probe_that_never_reports_frees_after_a_cooldown() -> None:
    """RC-003: a cancelled re-probe must not disable the remote for the rest of the run."""
    clock = Clock()
    breaker = CircuitBreaker(failures=1, cooldown_s=5, clock=clock)
    breaker.failure()
    clock.now = 5.0
    assert breaker.allow()  # probe sent, then cancelled: no success(), no failure()
    assert not breaker.allow()
    clock.now = 10.0
    assert breaker.allow()  # another probe


def test_grpcs_resolves_tls_files_relative_to_the_workspace(tmp_path: Path) -> None:
    """SEC-005: a grpcs:// remote carries its CA (flag > env > config) and client cert/key."""
    from hazremote.domain.model import RemoteSettings, TlsSettings

    config = RemoteSettings(
        url="grpcs://cache:443", tls=TlsSettings(ca="certs/ca.pem", cert="c.pem", key="c.key")
    )
    resolved = resolve_remote(RemoteFlags(), environ={}, config=config, root=tmp_path)
    assert resolved is not None
    assert resolved.target == "cache:443"
    assert resolved.tls is not None
    assert (resolved.tls.ca, resolved.tls.cert, resolved.tls.key) == (
        tmp_path / "certs/ca.pem",
        tmp_path / "c.pem",
        tmp_path / "c.key",
    )
    flag = resolve_remote(
        RemoteFlags(ca="/etc/ca.pem"), environ={"HAZ_REMOTE_CA": "/env.pem"}, config=config
    )
    assert flag is not None
    assert flag.tls is not None
    assert str(flag.tls.ca) == "/etc/ca.pem"
    plain = resolve_remote(RemoteFlags(url="grpc://h:1"), environ={}, config=RemoteSettings())
    assert plain is not None
    assert plain.tls is None


def test_tls_misconfiguration_is_a_usage_error() -> None:
    from hazremote.domain.model import RemoteSettings, TlsSettings

    with pytest.raises(UsageError, match="needs a grpcs:// remote"):
        resolve_remote(
            RemoteFlags(url="grpc://h:1", ca="/ca.pem"), environ={}, config=RemoteSettings()
        )
    half = RemoteSettings(url="grpcs://h:1", tls=TlsSettings(cert="c.pem"))
    with pytest.raises(UsageError, match="go together"):
        resolve_remote(RemoteFlags(), environ={}, config=half)
