"""``haz-cache-service`` with ``--tokens`` as a real process: exit 2 on a bad file, SIGHUP
reload, producers listed by ``admin list-producers`` (SEC-002, SEC-006, EXEC-021)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import grpc

from cache_service.auth import hash_secret
from hazremote.wire.haz.remote.v1 import cache_pb2, cache_pb2_grpc
from tests.cache_service.auth.authkit import SECRETS, bearer, code_of, get_request, tokens_yaml
from tests.cache_service.server.serverkit import BLAKE3, digest_of, make_manifest, put_request
from tests.cache_service.server.test_command import COMMAND, Service


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAZ_CACHE_")}
    env["XDG_DATA_HOME"] = str(tmp_path / "xdg")
    return env


def test_invalid_tokens_file_or_half_tls_settings_exit_2(tmp_path: Path) -> None:
    """EXEC-021: a tokens file failing validation, or --tls-cert without --tls-key, stops
    the start with exit 2 and a message naming the problem."""
    bad = tmp_path / "tokens.yaml"
    bad.write_text("tokens:\n  - name: a\n    sha256: nothex\n    namespaces: [main]\n")
    common = ["serve", "--listen", "127.0.0.1:0", "--storage", str(tmp_path / "store")]
    result = subprocess.run(
        [COMMAND, *common, "--tokens", str(bad)],
        check=False,
        capture_output=True,
        text=True,
        env=_env(tmp_path),
        timeout=60,
    )
    assert result.returncode == 2
    assert str(bad) in result.stderr
    assert "sha256" in result.stderr
    result = subprocess.run(
        [COMMAND, *common, "--tls-cert", str(bad)],
        check=False,
        capture_output=True,
        text=True,
        env=_env(tmp_path),
        timeout=60,
    )
    assert result.returncode == 2
    assert "--tls-key" in result.stderr


def test_tokens_from_the_environment_sighup_reload_and_producers_listed(tmp_path: Path) -> None:
    """SEC-002 (HAZ_CACHE_TOKENS, SIGHUP reload), SEC-006 (the access log and
    ``admin list-producers`` name the token that wrote)."""
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(tokens_yaml())
    store = tmp_path / "store"
    env = _env(tmp_path) | {"HAZ_CACHE_TOKENS": str(tokens)}
    service = Service("serve", "--listen", "127.0.0.1:0", "--storage", str(store), env=env)
    try:
        address = service.wait_for("listening on ").removeprefix("listening on ")
        with grpc.insecure_channel(address) as channel:
            manifests = cache_pb2_grpc.ManifestStoreStub(channel)
            content = cache_pb2_grpc.ContentStoreStub(channel)
            manifest = make_manifest(key_label="cli", producer="client-claims")
            content.BatchUpdateBlobs(
                cache_pb2.BatchUpdateBlobsRequest(
                    hash_function=BLAKE3,
                    items=[
                        cache_pb2.BatchUpdateBlobsRequest.Item(digest=digest_of(b), data=b)
                        for b in (b"out\n", b"")
                    ],
                ),
                metadata=bearer("ci-main"),
            )
            assert manifests.PutManifest(put_request(manifest), metadata=bearer("ci-main")).created
            put = manifests.PutManifest
            denied = code_of(put, put_request(manifest), metadata=bearer("laptop"))
            assert denied is grpc.StatusCode.PERMISSION_DENIED
            request = get_request(manifest.key.raw, "main")
            assert code_of(manifests.GetManifest, request) == grpc.StatusCode.UNAUTHENTICATED

            # Same size, same inode, same mtime: only SIGHUP (not the file watcher) can see
            # that the laptop token's secret changed.
            before = tokens.stat()
            text = tokens.read_text()
            tokens.write_text(
                text.replace(hash_secret(SECRETS["laptop"]), hash_secret("sighup-secret"))
            )
            os.utime(tokens, ns=(before.st_atime_ns, before.st_mtime_ns))
            service.proc.send_signal(signal.SIGHUP)
            service.wait_for('{"event": "tokens file reloaded"')
            reply = manifests.GetManifest(request, metadata=bearer("sighup-secret"))
            status = code_of(manifests.GetManifest, request, metadata=bearer("laptop"))
            assert status is grpc.StatusCode.UNAUTHENTICATED
            assert reply.found
        service.proc.send_signal(signal.SIGTERM)
        assert service.proc.wait(timeout=30) == 0
    finally:
        if service.proc.poll() is None:
            service.proc.kill()
    events = [json.loads(line) for line in service.rest() if line.startswith("{")]
    assert not any("open to every caller" in e.get("event", "") for e in events)
    puts = [e for e in events if e.get("method") == "ManifestStore/PutManifest"]
    assert [(e["identity"], e["code"]) for e in puts] == [
        ("ci-main", "OK"),
        ("laptop", "PERMISSION_DENIED"),  # refused calls are logged with who tried
    ]

    listing = subprocess.run(
        [COMMAND, "admin", "list-producers", "--storage", str(store)],
        check=False,
        capture_output=True,
        text=True,
        env=_env(tmp_path),
        timeout=60,
    )
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.splitlines() == ["ci-main\t1\tmain"]
