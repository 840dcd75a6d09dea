"""``--read-cache-manifest-ttl`` (SVC-003): flag > HAZ_CACHE_* > file > default, validated."""

from __future__ import annotations

from pathlib import Path

import pytest

from cache_service.__main__ import build_parser
from cache_service.config import ServiceConfig, ServiceConfigError, resolve_config


def test_default_is_thirty_seconds_and_zero_turns_it_off(tmp_path: Path) -> None:
    """The default bound is 30 s; any duration form works; 0 is allowed (no manifest cache)."""
    cache = str(tmp_path / "cache")
    assert ServiceConfig().read_cache_manifest_ttl == 30.0
    assert resolve_config(flags={"read_cache": cache}, env={}).read_cache_manifest_ttl == 30.0
    for text, seconds in (("0", 0.0), ("500ms", 0.5), ("2m", 120.0)):
        resolved = resolve_config(
            flags={"read_cache": cache, "read_cache_manifest_ttl": text}, env={}
        )
        assert resolved.read_cache_manifest_ttl == seconds


def test_flag_beats_environment_beats_file(tmp_path: Path) -> None:
    config = tmp_path / "cache.yaml"
    config.write_text(f"read_cache: {tmp_path / 'cache'}\nread_cache_manifest_ttl: 1m\n")
    env = {"HAZ_CACHE_CONFIG": str(config)}
    assert resolve_config(flags={}, env=env).read_cache_manifest_ttl == 60.0
    env["HAZ_CACHE_READ_CACHE_MANIFEST_TTL"] = "10s"
    assert resolve_config(flags={}, env=env).read_cache_manifest_ttl == 10.0
    flags = {"read_cache_manifest_ttl": "5"}
    assert resolve_config(flags=flags, env=env).read_cache_manifest_ttl == 5.0


def test_bad_values_and_a_ttl_without_read_cache_are_refused(tmp_path: Path) -> None:
    """EXEC-021: the message names the source of the bad value."""
    cache = str(tmp_path / "cache")
    with pytest.raises(ServiceConfigError, match="--read-cache-manifest-ttl: invalid duration"):
        resolve_config(flags={"read_cache": cache, "read_cache_manifest_ttl": "soon"}, env={})
    with pytest.raises(ServiceConfigError, match="HAZ_CACHE_READ_CACHE_MANIFEST_TTL"):
        resolve_config(flags={"read_cache": cache}, env={"HAZ_CACHE_READ_CACHE_MANIFEST_TTL": "-3"})
    with pytest.raises(ServiceConfigError, match="needs --read-cache DIR"):
        resolve_config(flags={"read_cache_manifest_ttl": "30s"}, env={})


def test_the_flag_is_documented_in_help() -> None:
    help_text = build_parser().format_help()
    assert "--read-cache-manifest-ttl DURATION" in help_text
    assert "HAZ_CACHE_READ_CACHE_MANIFEST_TTL" in help_text
