"""haz-worker's command line: flags parsed into the agent's configuration, bad flags named
with exit 2 (RX-003, SEC-002, SEC-005, EXEC-021)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hazremote.errors import UsageError
from hazremote.remote.action import Platform
from worker.__main__ import main, parse_args

BASE = [
    "--server",
    "grpc://svc:7000",
    "--slots",
    "4",
    "--platform",
    "pool=large,os=linux",
    "--work-dir",
    "/var/lib/haz",
    "--input-cache-size",
    "10GB",
]


def test_flags_become_the_agent_configuration_and_the_token_comes_from_the_env() -> None:
    options = parse_args(
        [*BASE, "--idle-exit", "10m", "--id", "w-1"], environ={"HAZ_WORKER_TOKEN": "s3cret"}
    )
    assert options.config.target == "svc:7000"
    assert options.config.tls is None
    assert options.config.token == "s3cret"
    agent = options.agent
    assert (agent.worker_id, agent.slots, agent.idle_exit_s) == ("w-1", 4, 600.0)
    assert agent.platform == Platform.of({"os": "linux", "pool": "large"})
    assert agent.work_dir == Path("/var/lib/haz")
    assert options.input_cache_bytes == 10_000_000_000


def test_grpcs_takes_the_tls_files() -> None:
    args = [*BASE, "--remote-ca", "/ca.pem", "--remote-cert", "/c.pem", "--remote-key", "/k.pem"]
    args[1] = "grpcs://svc:7000"
    tls = parse_args(args, environ={}).config.tls
    assert tls is not None
    assert tls.ca == Path("/ca.pem")
    assert tls.key == Path("/k.pem")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--slots": "0"}, "--slots must be at least 1"),
        ({"--slots": "many"}, "--slots: expected a whole number"),
        ({"--platform": "pool"}, "--platform: expected NAME=VALUE"),
        ({"--platform": "a=1,a=2"}, "'a' is given twice"),
        ({"--input-cache-size": "lots"}, "--input-cache-size: invalid size"),
        ({"--server": "http://svc:1"}, "unsupported scheme"),
        ({"--idle-exit": "soon"}, "--idle-exit:"),
        ({"--id": "a b"}, "--id: 'a b' is not"),
        ({"--remote-ca": "/ca.pem"}, "need a grpcs:// server"),
    ],
)
def test_bad_flags_are_named(change: dict[str, str], message: str) -> None:
    args = list(BASE)
    for flag, value in change.items():
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        parse_args(args, environ={})


def test_a_missing_flag_or_tls_file_exits_2_with_the_message(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["--slots", "1"]) == 2
    assert "haz-worker: error:" in capsys.readouterr().err
    args = [*BASE, "--remote-ca", str(tmp_path / "none.pem")]
    args[1] = "grpcs://svc:7000"
    assert main(args) == 2
    assert "remote TLS CA" in capsys.readouterr().err
