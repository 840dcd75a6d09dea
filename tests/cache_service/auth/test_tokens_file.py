"""Strict parsing of the tokens file (SEC-002, §5) and token expiry."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from cache_service.auth import TokenAuthority, TokensFileError, hash_secret, parse_tokens
from cache_service.identity import Grant
from tests.cache_service.auth.authkit import SECRETS, bearer, tokens_yaml

HEX = hash_secret("x")


def test_the_spec_example_parses_into_grants() -> None:
    """§5: the documented format, including globs, read-through, role and expiry."""
    parsed = parse_tokens(tokens_yaml(), source="t.yaml")
    assert parsed.anonymous is None
    by_name = {t.name: t for t in parsed.tokens}
    assert by_name["ci-pr"].grant == Grant(
        namespaces=("pr-*",), scope="read-write", read_through=("main",)
    )
    assert by_name["ci-main"].grant.execute is True
    assert by_name["worker-a"].grant == Grant(namespaces=("*",), role="worker")
    assert by_name["old"].expires == dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    assert by_name["laptop"].sha256.hex() == hash_secret(SECRETS["laptop"])
    anonymous = parse_tokens("anonymous: {namespaces: [main]}\n", source="t").anonymous
    assert anonymous == Grant(namespaces=("main",), scope="read")


def _token(**fields: str) -> str:
    base = {"name": "t1", "sha256": f'"{HEX}"', "namespaces": "[main]"}
    base.update(fields)
    body = "\n".join(f"    {k}: {v}" for k, v in base.items() if v != "")
    return "tokens:\n  - " + body.lstrip() + "\n"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("tokens: []\nextra: 1\n", "unknown key 'extra'"),
        (_token(colour="red"), "unknown key 'colour'"),
        (_token(sha256='"' + HEX.upper() + '"'), "64 lowercase hex"),
        (_token(sha256='"abc"'), "64 lowercase hex"),
        (_token(scope="admin"), "scope"),
        (_token(execute='"yes"'), "execute"),
        (_token(role="boss"), "role"),
        (_token(namespaces="[]"), "non-empty list"),
        (_token(namespaces='["pr/1"]'), "not a namespace"),
        (_token(read_through='["pr-*"]'), "read_through"),
        (_token(expires='"tomorrow"'), "RFC 3339"),
        (_token(expires='"2027-01-01T00:00:00"'), "time zone"),
        (_token(name="anonymous"), "reserved"),
        (_token(name='"bad name"'), "name"),
        (_token(sha256=""), "missing 'sha256'"),
        (_token() + _token().removeprefix("tokens:\n"), "appears twice"),
        (_token() + _token(name="t2").removeprefix("tokens:\n"), "same sha256"),
        ("anonymous: all\n", "anonymous"),
        ("anonymous: {namespaces: [main], scope: read-write}\n", "unknown key 'scope'"),
        ("tokens: [\n", "invalid YAML"),
        ("- a\n", "expected a mapping"),
    ],
)
def test_invalid_files_are_rejected_naming_the_problem(text: str, fragment: str) -> None:
    """SEC-002/EXEC-021: strict validation; the message names file, token and key."""
    with pytest.raises(TokensFileError) as caught:
        parse_tokens(text, source="tokens.yaml")
    assert fragment in str(caught.value)
    assert str(caught.value).startswith("tokens.yaml")


def test_unreadable_file_is_a_tokens_file_error(tmp_path: Path) -> None:
    """EXEC-021: a missing tokens file is a configuration error, not a crash."""
    with pytest.raises(TokensFileError, match="cannot read"):
        TokenAuthority.open(tmp_path / "absent.yaml")


def test_a_token_stops_working_at_its_expiry(tmp_path: Path) -> None:
    """SEC-002: ``expires`` is checked per call against the clock."""
    path = tmp_path / "t.yaml"
    path.write_text(
        _token(name="soon", expires="2030-01-01T00:00:00Z").replace(HEX, hash_secret("s")),
        encoding="utf-8",
    )
    now = [dt.datetime(2029, 12, 31, 23, 59, tzinfo=dt.UTC)]
    authority = TokenAuthority.open(path, clock=lambda: now[0])
    metadata = dict(bearer("s"))
    method = "/haz.remote.v1.ManifestStore/GetManifest"
    assert authority.authenticate(method=method, metadata=metadata).name == "soon"
    now[0] = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    with pytest.raises(PermissionError, match="expired"):
        authority.authenticate(method=method, metadata=metadata)


def test_methods_without_an_access_rule_are_refused(tmp_path: Path) -> None:
    """Fail closed: a method missing from ``METHOD_ACCESS`` is PERMISSION_DENIED even for the
    most privileged token."""
    authority = TokenAuthority(parse_tokens(tokens_yaml(), source="t"))
    method = "/haz.remote.v1.Execution/ExecuteEverything"
    identity = authority.authenticate(method=method, metadata=dict(bearer("ci-main")))
    with pytest.raises(PermissionError, match="not open"):
        authority.authorize(identity, method=method, namespace="main")
