"""``--tokens`` and ``--tls-*`` settings resolve like every other item (SVC-003, SEC-002,
SEC-005) and half a TLS setup is a configuration error (EXEC-021)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cache_service.app import server_credentials
from cache_service.config import ServiceConfigError, resolve_config


def test_tokens_and_tls_come_from_file_environment_and_flags(tmp_path: Path) -> None:
    """SVC-003: flag > HAZ_CACHE_* > config file, per item, for the new settings too."""
    config_file = tmp_path / "cache.yaml"
    config_file.write_text("tokens: /etc/haz/tokens.yaml\ntls_cert: a.crt\ntls_key: a.key\n")
    config = resolve_config(
        flags={"config": str(config_file), "tls_key": "flag.key"},
        env={"HAZ_CACHE_TLS_CERT": "env.crt"},
    )
    assert config.tokens == Path("/etc/haz/tokens.yaml")
    assert (config.tls_cert, config.tls_key, config.tls_client_ca) == (
        Path("env.crt"),
        Path("flag.key"),
        None,
    )
    assert resolve_config(flags={}, env={}).tokens is None


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        ({"tls_cert": "a.crt"}, "--tls-key"),
        ({"tls_key": "a.key"}, "--tls-cert"),
        ({"tls_client_ca": "ca.crt"}, "--tls-client-ca needs"),
    ],
)
def test_incomplete_tls_settings_are_rejected(flags: dict[str, object], fragment: str) -> None:
    """SEC-005/EXEC-021: certificate and key go together; a client CA needs both."""
    with pytest.raises(ServiceConfigError, match=fragment):
        resolve_config(flags=flags, env={})


def test_unreadable_tls_file_is_a_configuration_error(tmp_path: Path) -> None:
    """EXEC-021: a missing certificate file is exit 2 (a ServiceConfigError), not a crash."""
    config = resolve_config(
        flags={"tls_cert": str(tmp_path / "no.crt"), "tls_key": str(tmp_path / "no.key")},
        env={},
    )
    with pytest.raises(ServiceConfigError, match="cannot read TLS certificate"):
        server_credentials(config)
