"""``haz doctor`` — is this machine set up right? (SPEC §5, EXEC-021: exit 1 when a check fails).

Checks, each printed as one ``ok`` / ``warn`` / ``FAIL`` line:
* config — the workspace loads and its graph validates (a config error is a failed check
  here, not exit 2: doctor reports, it does not stop at the first problem);
* local cache — where it is, entries, corrupt entries and leftovers, and that it is writable;
* remote (when configured: ``--remote`` / ``HAZ_REMOTE_URL`` / ``remote.url``) — reachability
  and round-trip latency (median of 3 ``GetCapabilities`` calls), server version, hash
  functions (the workspace's must be supported), clock skew, and the token's name, scope,
  namespaces and read-through chain as the *server* sees them (SEC-002/003).
Sizes are shown in binary units; the skew is measured against the middle of the round trip
and worded with a precision that suits it (:func:`describe_skew`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from dataclasses import dataclass

from hazremote.domain.units import format_duration, format_size
from hazremote.errors import HazError
from hazremote.remote.settings import RemoteConfig

#: Clock skew beyond this is worth a warning: entry ages and token expiry depend on clocks.
SKEW_WARN_S = 5.0


@dataclass(frozen=True, slots=True)
class Check:
    status: str  # "ok" | "warn" | "FAIL"
    name: str
    detail: str


def _magnitude(seconds: float) -> str:
    """A duration in a precision that suits it: ``42 ms``, ``1.3 s``, ``13 s``, ``2m05s``."""
    if round(seconds * 1000) < 1000:
        return f"{round(seconds * 1000)} ms"
    if round(seconds, 1) < 10:
        return f"{seconds:.1f} s"
    if round(seconds) < 60:
        return f"{round(seconds)} s"
    return format_duration(seconds)


def describe_skew(skew_s: float, *, uncertainty_s: float) -> str:
    """The server clock against this machine's: ``skew_s`` > 0 means the server is ahead.

    ``uncertainty_s`` is what one round trip leaves unknown (half of it), at least the
    millisecond the server's clock is sent in; a skew within it cannot be told from none (and
    never prints as ``-0.0 s``).
    """
    uncertainty_s = max(uncertainty_s, 0.001)
    margin = _magnitude(uncertainty_s)
    if abs(skew_s) <= uncertainty_s:
        return f"in step with this machine (within ±{margin})"
    direction = "ahead of" if skew_s > 0 else "behind"
    return f"server clock is {_magnitude(abs(skew_s))} {direction} this machine (±{margin})"


def describe_limits(*, max_blob_bytes: int, max_batch_items: int, max_batch_bytes: int) -> str:
    """The server's announced limits in human units; a limit it leaves at 0 is not shown."""
    parts = []
    if max_blob_bytes:
        parts.append(f"max blob {format_size(max_blob_bytes)}")
    batch = [f"{max_batch_items} items"] if max_batch_items else []
    if max_batch_bytes:
        batch.append(format_size(max_batch_bytes))
    if batch:
        parts.append("batches of at most " + " and ".join(batch))
    return "; ".join(parts) or "none announced"


def _print(check: Check) -> None:
    print(f"{check.status:<4}  {check.name}: {check.detail}")


def _remote_checks(remote: RemoteConfig, hash_value: str) -> list[Check]:
    import grpc

    from hazremote.remote.channel import sync_channel
    from hazremote.wire.haz.remote.v1 import cache_pb2, cache_pb2_grpc, digest_pb2

    target, token, namespace = remote.target, remote.token, remote.namespace
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    checks: list[Check] = []
    try:
        channel = sync_channel(remote)
    except HazError as error:
        return [Check("FAIL", "remote", str(error))]
    with channel:
        stub = cache_pb2_grpc.CapabilitiesStub(channel)
        request = cache_pb2.GetCapabilitiesRequest(namespace=namespace)
        samples: list[float] = []
        reply = None
        try:
            for _ in range(3):
                start = time.perf_counter()
                sent_s = time.time()
                reply = stub.GetCapabilities(request, timeout=5, metadata=metadata)
                samples.append(time.perf_counter() - start)
                # The server read its clock somewhere within the round trip: compare it with
                # this machine's clock at the middle, give or take half the round trip.
                local_mid_s = (sent_s + time.time()) / 2
        except grpc.RpcError as error:
            code = error.code().name if hasattr(error, "code") else "UNKNOWN"
            detail = error.details() if hasattr(error, "details") else str(error)
            return [Check("FAIL", "remote", f"{target}: {code}: {detail}")]
        assert reply is not None
        latency_ms = statistics.median(samples) * 1000
        transport = "TLS" if remote.tls is not None else "plaintext"
        checks.append(
            Check(
                "ok", "remote", f"{target} reachable ({transport}), {latency_ms:.1f} ms round trip"
            )
        )
        checks.append(Check("ok", "server version", reply.server_version or "unknown"))
        names = {
            digest_pb2.HASH_FUNCTION_BLAKE3: "blake3",
            digest_pb2.HASH_FUNCTION_SHA256: "sha256",
        }
        supported = [names.get(h, str(h)) for h in reply.hash_functions]
        checks.append(
            Check(
                "ok" if hash_value in supported else "FAIL",
                "hash functions",
                f"server supports {', '.join(supported) or 'none'}; workspace uses {hash_value}",
            )
        )
        skew_s = reply.server_time_unix_ms / 1000 - local_mid_s
        checks.append(
            Check(
                "ok" if abs(skew_s) <= SKEW_WARN_S else "warn",
                "clock skew",
                describe_skew(skew_s, uncertainty_s=samples[-1] / 2),
            )
        )
        checks.append(
            Check(
                "ok",
                "limits",
                describe_limits(
                    max_blob_bytes=reply.max_blob_size_bytes,
                    max_batch_items=reply.max_batch_items,
                    max_batch_bytes=reply.max_batch_total_size_bytes,
                ),
            )
        )
        if reply.auth_disabled:
            checks.append(Check("warn", "token", "the server runs without tokens (open access)"))
        elif reply.token_name:
            through = ", ".join(reply.token_read_through) or "none"
            checks.append(
                Check(
                    "ok",
                    "token",
                    f"{reply.token_name}: scope {reply.token_scope or 'none'} on {namespace!r}; "
                    f"namespaces {', '.join(reply.token_namespaces) or 'none'}; "
                    f"read-through {through}",
                )
            )
        else:
            checks.append(Check("warn", "token", "anonymous: no token was sent or recognised"))
    return checks


def run(args: argparse.Namespace) -> int:
    from hazremote.cli.context import open_workspace
    from hazremote.cli.session import open_cache
    from hazremote.remote.settings import RemoteFlags, resolve_remote

    checks: list[Check] = []
    try:
        context = open_workspace(args)
    except HazError as error:
        _print(Check("FAIL", "config", str(error)))
        return 1
    workspace = context.workspace
    checks.append(
        Check(
            "ok",
            "config",
            f"{context.root}: {len(workspace.projects)} project(s), "
            f"{len(context.graph.tasks)} task(s), hash {workspace.settings.cache.hash.value}",
        )
    )
    cache = open_cache(workspace)
    info = cache.info()
    try:
        cache.root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=cache.root, prefix=".doctor-"):
            pass
        writable = True
    except OSError as error:
        writable = False
        checks.append(Check("FAIL", "local cache", f"{cache.root} is not writable: {error}"))
    if writable:
        status = "warn" if info.corrupt_entries or info.orphan_temp_dirs else "ok"
        checks.append(
            Check(
                status,
                "local cache",
                f"{cache.root}: {info.entries} entries ({format_size(info.bytes)}), "
                f"{info.corrupt_entries} corrupt, "
                f"{info.orphan_temp_dirs} leftover temp dir(s)"
                + (" (run `haz cache clean --soft`)" if status == "warn" else ""),
            )
        )
    try:
        remote = resolve_remote(
            RemoteFlags(url=args.remote, ca=args.remote_ca),
            environ=os.environ,
            config=workspace.settings.remote,
            root=context.root,
        )
    except HazError as error:
        checks.append(Check("FAIL", "remote", str(error)))
        remote = None
    else:
        if remote is None:
            checks.append(Check("ok", "remote", "none configured (local cache only)"))
    if remote is not None:
        checks += _remote_checks(remote, workspace.settings.cache.hash.value)
    for check in checks:
        _print(check)
    return 1 if any(c.status == "FAIL" for c in checks) else 0
