"""``--help`` of every command speaks to users: no internal spec rule IDs.

Spec coverage:
* SPEC §5 — every command has ``--help`` (``haz``, each ``haz`` command, ``haz-cache-service``
  and its subcommands, ``haz-worker``); rule IDs such as ``EXEC-030`` are for the code and the
  tests, not for the people reading the help.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from cache_service.__main__ import main as service_main
from hazremote.cli.main import build_parser
from hazremote.cli.main import main as haz_main

_PREFIXES = "AUX|CACHE|CFG|DAG|DISC|EXEC|ID|MUTEX|OPS|PATH|QRY|RC|REF|RX|SEC|SVC"
#: ``EXEC-030``, ``CACHE-021/022``, a bare chapter like ``(EXEC)``, or the spec itself.
RULE_ID = re.compile(rf"\b(?:{_PREFIXES})-\d+|\((?:{_PREFIXES})\)|\bSPEC\b|§")


def _haz_commands() -> list[str]:
    parser = build_parser()
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(sub.choices)


def _help_of(
    main: Callable[[list[str]], object], argv: list[str], capsys: pytest.CaptureFixture[str]
) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert text.strip()
    return re.sub(r"-\s+", "-", text)  # argparse may wrap a long line after a hyphen


def test_the_rule_id_pattern_recognises_what_it_must() -> None:
    for text in ("(EXEC-030)", "CACHE-021/022", "run tasks (EXEC)", "SPEC §5", "DISC-001"):
        assert RULE_ID.search(text), text
    for text in ("--dry-run=json", "HAZ_CACHE_STORAGE", "grpc://HOST:PORT", "a task ID"):
        assert not RULE_ID.search(text), text


@pytest.mark.parametrize("argv", [[], *([c] for c in _haz_commands())], ids=str)
def test_haz_help_has_no_rule_ids(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    text = _help_of(haz_main, argv, capsys)
    assert RULE_ID.findall(text) == [], text


@pytest.mark.parametrize(
    "argv",
    [[], ["serve"], ["gc"], ["admin"], ["admin", "list-producers"], ["admin", "purge"]],
    ids=str,
)
def test_cache_service_help_has_no_rule_ids(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    text = _help_of(service_main, argv, capsys)
    assert RULE_ID.findall(text) == [], text


def test_worker_help_has_no_rule_ids() -> None:
    worker = Path(sys.executable).parent / "haz-worker"
    result = subprocess.run(
        [str(worker), "--help"], capture_output=True, text=True, check=False, timeout=60
    )
    text = result.stdout + result.stderr
    assert text.strip()
    assert RULE_ID.findall(text) == [], text
