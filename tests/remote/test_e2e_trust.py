"""Trust and safety end to end: the real ``haz`` against a real ``haz-cache-service`` with a
tokens file and TLS.

Spec coverage: SEC-002 (a wrong or read-only token never fails a run: one warning, the tasks
run locally, nothing is written), SEC-003 (a pull-request build reads through to `main`,
writes only its own namespace, and `main` never sees its entries — the CREEP defence),
SEC-005 (grpcs with a CA: works; plaintext to a TLS port: the run still succeeds locally),
SEC-006 (the producer recorded on the server is the token's name).
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.cache_service.auth.authkit import SECRETS, tokens_yaml
from tests.cache_service.auth.test_tls import _issue, _pem
from tests.remote.test_run_remote import FAST, files, warning_lines
from tests.run.conftest import HazRunner

pytestmark = pytest.mark.e2e

SERVICE = str(Path(sys.executable).parent / "haz-cache-service")


@contextmanager
def service(tmp: Path, *extra: str) -> Iterator[tuple[str, Path]]:
    """A real service on a free port; yields ``(host:port, store directory)``."""
    store = tmp / "store"
    log = tmp / "service.log"
    with open(log, "wb") as sink:
        process = subprocess.Popen(
            [SERVICE, "--listen", "127.0.0.1:0", "--storage", str(store), *extra],
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            match = re.search(r"listening on (\S+)", log.read_text(errors="replace"))
            if match:
                break
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"haz-cache-service did not start:\n{log.read_text()}")
            time.sleep(0.05)
        yield match.group(1), store
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def manifests_in(store: Path) -> dict[str, list[str]]:
    """Namespace → manifest documents found in a disk store (SVC-002 layout)."""
    found: dict[str, list[str]] = {}
    for path in store.glob("v1/ns/*/ac/**/*"):
        if path.is_file() and not path.name.startswith("."):
            namespace = path.relative_to(store).parts[2]
            found.setdefault(namespace, []).append(path.read_text())
    return found


def as_token(name: str, address: str, namespace: str, **extra: str) -> dict[str, str]:
    return {
        "HAZ_REMOTE_URL": f"grpc://{address}",
        "HAZ_REMOTE_TOKEN": SECRETS[name],
        "HAZ_REMOTE_NAMESPACE": namespace,
        "HAZ_REMOTE_TIMEOUTS": FAST,
        **extra,
    }


@pytest.fixture
def tokens(tmp_path: Path) -> Path:
    path = tmp_path / "tokens.yml"
    path.write_text(tokens_yaml())
    return path


def test_pull_requests_read_through_main_and_main_never_sees_their_entries(
    haz: HazRunner, make_workspace: Callable[..., Path], tmp_path: Path, tokens: Path
) -> None:
    with service(tmp_path, "--tokens", str(tokens)) as (address, store):
        main_clone = make_workspace(files(), name="main-ci")
        assert (
            haz("run", "--workspace", cwd=main_clone, env=as_token("ci-main", address, "main")).code
            == 0
        )
        assert set(manifests_in(store)) == {"main"}
        assert all('"producer":"ci-main"' in m for m in manifests_in(store)["main"])  # SEC-006

        pr_clone = make_workspace(files(), name="pr-clone")
        pr_env = as_token("ci-pr", address, "pr-1")
        first = haz("run", "--workspace", cwd=pr_clone, env=pr_env)
        assert first.sources() == {"app:build": "remote-cache", "lib:build": "remote-cache"}

        (pr_clone / "lib" / "src" / "main.txt").write_text("a pull request's change\n")
        changed = haz("run", "--workspace", cwd=pr_clone, env=pr_env)
        assert changed.task("lib:build")["source"] == "fresh"
        assert "pr-1" in manifests_in(store)

        main_again = make_workspace(files(), name="main-again")
        (main_again / "lib" / "src" / "main.txt").write_text("a pull request's change\n")
        trusted = haz(
            "run", "--workspace", cwd=main_again, env=as_token("ci-main", address, "main")
        )
        assert trusted.task("lib:build")["source"] == "fresh"  # pr-1's entry is invisible

        sneaky = make_workspace(files(), name="pr-to-main")
        (sneaky / "lib" / "src" / "main.txt").write_text("poisoned\n")
        before = len(manifests_in(store)["main"])
        cannot = haz("run", "--workspace", cwd=sneaky, env=as_token("ci-pr", address, "main"))
        assert cannot.code == 0  # writing outside its namespaces: a warning, never a failure
        assert len(warning_lines(cannot.stderr)) == 1
        assert len(manifests_in(store)["main"]) == before  # nothing poisoned main


def test_a_read_only_or_wrong_token_never_fails_a_run_and_writes_nothing(
    haz: HazRunner, make_workspace: Callable[..., Path], tmp_path: Path, tokens: Path
) -> None:
    with service(tmp_path, "--tokens", str(tokens)) as (address, store):
        laptop = haz(
            "run",
            "--workspace",
            cwd=make_workspace(files(), name="laptop"),
            env=as_token("laptop", address, "main"),
        )
        assert laptop.code == 0
        assert set(laptop.sources().values()) == {"fresh"}
        assert len(warning_lines(laptop.stderr)) == 1
        assert manifests_in(store) == {}

        wrong = as_token("laptop", address, "main", HAZ_REMOTE_TOKEN="not-a-token")
        result = haz("run", "--workspace", cwd=make_workspace(files(), name="wrong"), env=wrong)
        assert result.code == 0
        assert len(warning_lines(result.stderr)) == 1
        assert manifests_in(store) == {}

        doctor = haz(
            "doctor",
            cwd=make_workspace(files(), name="doc"),
            env=as_token("laptop", address, "main"),
        )
        assert "laptop: scope read on 'main'" in doctor.out


def test_grpcs_with_a_ca_shares_results_and_plaintext_is_refused(
    haz: HazRunner, make_workspace: Callable[..., Path], tmp_path: Path
) -> None:
    ca = _issue("haz test CA")
    server = _pem(_issue("localhost", issuer=ca, server=True))
    pki = tmp_path / "pki"
    pki.mkdir()
    (pki / "ca.crt").write_bytes(_pem(ca).cert)
    (pki / "server.crt").write_bytes(server.cert)
    (pki / "server.key").write_bytes(server.key)
    tls = ("--tls-cert", str(pki / "server.crt"), "--tls-key", str(pki / "server.key"))
    with service(tmp_path, *tls) as (address, _store):
        env = {
            "HAZ_REMOTE_URL": f"grpcs://{address}",
            "HAZ_REMOTE_CA": str(pki / "ca.crt"),
            "HAZ_REMOTE_TIMEOUTS": FAST,
        }
        assert haz("run", "--workspace", cwd=make_workspace(files(), name="one"), env=env).code == 0
        second = haz("run", "--workspace", cwd=make_workspace(files(), name="two"), env=env)
        assert second.sources() == {"app:build": "remote-cache", "lib:build": "remote-cache"}
        assert "(TLS)" in haz("doctor", cwd=make_workspace(files(), name="doc"), env=env).out

        plain = {**env, "HAZ_REMOTE_URL": f"grpc://{address}"}
        result = haz("run", "--workspace", cwd=make_workspace(files(), name="plain"), env=plain)
        assert result.code == 0
        assert set(result.sources().values()) == {"fresh"}
        assert len(warning_lines(result.stderr)) == 1
