"""Remote cache settings: flag > environment > workspace config, resolved once per run.

This module imports no gRPC: ``haz run`` without a remote never pays for it.

Spec coverage:
* Remote settings (§5) — URL, mode (``read-write``), namespace (``main``), token; empty is unset.
* SEC-005 — ``grpcs://`` with ``--remote-ca``/``HAZ_REMOTE_CA`` and a client certificate.
* RC-003 — the deadlines and breaker thresholds (``HAZ_REMOTE_TIMEOUTS``).
* RX-001 — :func:`resolve_remote_execution`: ``--remote-exec`` > ``HAZ_REMOTE_EXEC`` >
  ``remote.execute`` (default ``never``), ``--remote-jobs``, ``remote.platform``.
Out of scope: talking to the server (:mod:`.client`, :mod:`.execution`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from hazremote.domain.model import RemoteMode, RemotePolicy, RemoteSettings
from hazremote.errors import UsageError

__all__ = [
    "DEFAULT_NAMESPACE",
    "ENV_EXEC",
    "ENV_MODE",
    "ENV_NAMESPACE",
    "ENV_TIMEOUTS",
    "ENV_TOKEN",
    "ENV_URL",
    "RemoteConfig",
    "RemoteExecution",
    "RemoteFlags",
    "RemoteTimeouts",
    "RemoteTls",
    "parse_remote_url",
    "parse_timeouts",
    "resolve_remote",
    "resolve_remote_execution",
]

ENV_URL = "HAZ_REMOTE_URL"
ENV_EXEC = "HAZ_REMOTE_EXEC"
ENV_MODE = "HAZ_REMOTE_MODE"
ENV_NAMESPACE = "HAZ_REMOTE_NAMESPACE"
ENV_TOKEN = "HAZ_REMOTE_TOKEN"
ENV_CA = "HAZ_REMOTE_CA"
ENV_CERT = "HAZ_REMOTE_CERT"
ENV_KEY = "HAZ_REMOTE_KEY"
#: Tuning knob (tests, slow links): ``name=value,...`` over :class:`RemoteTimeouts` fields.
ENV_TIMEOUTS = "HAZ_REMOTE_TIMEOUTS"
DEFAULT_NAMESPACE = "main"
#: SPEC §5 / SEC-003: namespaces are ID-like names.
_NAMESPACE_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_HOST_PORT_RE = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(?P<port>[0-9]{1,5})")


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoteFlags:
    """The ``haz run`` flags, ``None`` when not given."""

    url: str | None = None
    mode: str | None = None
    namespace: str | None = None
    ca: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoteTimeouts:
    """RC-003: how long the remote may take before it counts as a miss.

    Attributes:
        connect_s: First connection (and each re-probe after the breaker opened).
        lookup_s: One manifest lookup batch.
        transfer_s: One blob transfer (batch or stream); large blobs get more per MiB.
        per_mib_s: Added to ``transfer_s`` for every MiB of a streamed blob.
        upload_drain_s: How long the end of a run waits for pending uploads.
        coalesce_s: Lookups issued within this window go out as one batch.
        keepalive_s: gRPC keepalive ping interval on the channel.
        breaker_failures: Consecutive failed calls that open the circuit breaker.
        breaker_cooldown_s: How long an open breaker refuses calls before one re-probe.
    """

    connect_s: float = 2.0
    lookup_s: float = 5.0
    transfer_s: float = 30.0
    per_mib_s: float = 1.0
    upload_drain_s: float = 60.0
    coalesce_s: float = 0.002
    keepalive_s: float = 30.0
    breaker_failures: int = 3
    breaker_cooldown_s: float = 10.0


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoteTls:
    """SEC-005: a ``grpcs://`` remote. ``ca`` None means the system's trusted roots;
    ``cert``/``key`` present a client certificate (mutual TLS)."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    def credentials_bytes(self) -> tuple[bytes | None, bytes | None, bytes | None]:
        """(root certificates, private key, certificate chain) for gRPC's SSL credentials.

        Raises:
            UsageError: a file cannot be read (named in the message).
        """

        def read(path: Path | None, what: str) -> bytes | None:
            if path is None:
                return None
            try:
                return path.read_bytes()
            except OSError as error:
                raise UsageError(f"remote TLS {what} {path}: {error.strerror or error}") from None

        return read(self.ca, "CA"), read(self.key, "key"), read(self.cert, "certificate")


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoteConfig:
    """A resolved remote cache: where, how, and as whom.

    Attributes:
        url: As given (``grpc://host:port``).
        target: The gRPC target (``host:port``).
        mode: READ_ONLY or READ_WRITE (OFF never yields a config).
        namespace: The namespace to read and write.
        token: The bearer token, or ``None`` for anonymous access.
        timeouts: Deadlines and breaker thresholds.
    """

    url: str
    target: str
    mode: RemoteMode
    namespace: str
    token: str | None = None
    timeouts: RemoteTimeouts = RemoteTimeouts()
    tls: RemoteTls | None = None

    @property
    def writes(self) -> bool:
        return self.mode is RemoteMode.READ_WRITE


def parse_remote_url(url: str) -> str:
    """The gRPC target (``host:port``) of a ``grpc://`` or ``grpcs://`` (TLS) URL.

    Raises:
        UsageError: any other scheme or a malformed URL.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise UsageError(f"remote URL {url!r} has no scheme: expected grpc://HOST:PORT")
    if scheme not in ("grpc", "grpcs"):
        raise UsageError(
            f"remote URL {url!r}: unsupported scheme {scheme!r}, expected grpc:// or grpcs://"
        )
    rest = rest.rstrip("/")
    match = _HOST_PORT_RE.fullmatch(rest)
    if match is None or not 0 < int(match["port"]) < 65536:
        raise UsageError(f"remote URL {url!r}: expected grpc://HOST:PORT with a port 1..65535")
    return rest


def parse_timeouts(text: str) -> RemoteTimeouts:
    """``connect_s=0.5,breaker_failures=2``: :class:`RemoteTimeouts` with those fields changed.

    Raises:
        UsageError: an unknown field or a value that is not a non-negative number.
    """
    fields = dict(RemoteTimeouts.__annotations__)
    values: dict[str, float | int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, raw = item.partition("=")
        name = name.strip()
        if not sep or name not in fields:
            known = ", ".join(sorted(fields))
            raise UsageError(f"{ENV_TIMEOUTS}: unknown item {item!r} (known: {known})")
        try:
            value: float | int = int(raw) if fields[name] == "int" else float(raw)
        except ValueError:
            raise UsageError(f"{ENV_TIMEOUTS}: {name} needs a number, got {raw!r}") from None
        if value < 0:
            raise UsageError(f"{ENV_TIMEOUTS}: {name} must not be negative")
        values[name] = value
    return RemoteTimeouts(**values)  # type: ignore[arg-type]


def _first(*values: str | None) -> str | None:
    for value in values:
        if value:
            return value
    return None


def resolve_remote(
    flags: RemoteFlags,
    *,
    environ: Mapping[str, str],
    config: RemoteSettings,
    timeouts: RemoteTimeouts | None = None,
    root: Path | None = None,
) -> RemoteConfig | None:
    """SPEC §5: the remote cache this run uses, or ``None`` (no URL, or mode ``off``).

    Raises:
        UsageError: an invalid URL, mode or namespace, naming where it came from.
    """
    mode_text = _first(flags.mode, environ.get(ENV_MODE))
    if mode_text is not None:
        try:
            mode: RemoteMode | None = RemoteMode(mode_text)
        except ValueError:
            source = "--remote-mode" if flags.mode else ENV_MODE
            choices = ", ".join(m.value for m in RemoteMode)
            raise UsageError(f"{source}: invalid mode {mode_text!r} (expected {choices})") from None
    else:
        mode = config.mode
    url = _first(flags.url, environ.get(ENV_URL), config.url)
    if mode is RemoteMode.OFF or url is None:
        return None
    target = parse_remote_url(url)
    namespace = _first(flags.namespace, environ.get(ENV_NAMESPACE), config.namespace)
    namespace = namespace or DEFAULT_NAMESPACE
    if _NAMESPACE_RE.fullmatch(namespace) is None:
        raise UsageError(
            f"remote namespace {namespace!r} is invalid: 1-64 characters of A-Z a-z 0-9 _ -"
        )
    token = _first(environ.get(ENV_TOKEN))
    if token is None and config.token_env:
        token = _first(environ.get(config.token_env))
    tls: RemoteTls | None = None
    if url.startswith("grpcs://"):

        def path(text: str | None) -> Path | None:
            if not text:
                return None
            candidate = Path(text).expanduser()
            return candidate if candidate.is_absolute() or root is None else root / candidate

        tls = RemoteTls(
            ca=path(_first(flags.ca, environ.get(ENV_CA), config.tls.ca)),
            cert=path(_first(environ.get(ENV_CERT), config.tls.cert)),
            key=path(_first(environ.get(ENV_KEY), config.tls.key)),
        )
        if (tls.cert is None) != (tls.key is None):
            raise UsageError("remote TLS: a client certificate and its key go together")
    elif flags.ca:
        raise UsageError(f"--remote-ca needs a grpcs:// remote, not {url!r}")
    return RemoteConfig(
        url=url,
        target=target,
        mode=mode or RemoteMode.READ_WRITE,
        namespace=namespace,
        token=token,
        timeouts=timeouts or parse_timeouts(environ.get(ENV_TIMEOUTS, "")),
        tls=tls,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoteExecution:
    """RX-001: where this run's misses may run.

    Attributes:
        policy: The run's ``remote.execute`` (``never``: every task runs locally).
        remote_jobs: ``--remote-jobs``; ``None``: the free slots the service reports.
        platform: ``remote.platform`` (each task's ``platform`` is merged over it).
    """

    policy: RemotePolicy = RemotePolicy.NEVER
    remote_jobs: int | None = None
    platform: Mapping[str, str] = field(default_factory=dict)


def resolve_remote_execution(
    flag: str | None,
    *,
    remote_jobs: int | None,
    environ: Mapping[str, str],
    config: RemoteSettings,
    remote: RemoteConfig | None,
) -> RemoteExecution:
    """RX-001: ``--remote-exec`` > ``HAZ_REMOTE_EXEC`` > ``remote.execute``, default ``never``.

    A workspace's ``remote.execute`` without a remote (none configured, or ``--remote-mode
    off``) is ``never``: turning the remote off must not break a run. Asking for remote
    execution on the command line or in the environment without a remote is an error.

    Raises:
        UsageError: an invalid policy or ``--remote-jobs``, naming where it came from.
    """
    text = _first(flag, environ.get(ENV_EXEC))
    source = "--remote-exec" if flag else ENV_EXEC
    if text is not None:
        try:
            policy = RemotePolicy(text)
        except ValueError:
            choices = ", ".join(p.value for p in RemotePolicy)
            raise UsageError(f"{source}: invalid value {text!r} (expected {choices})") from None
        if policy is not RemotePolicy.NEVER and remote is None:
            raise UsageError(
                f"{source} {policy.value} needs a remote: --remote URL, {ENV_URL} or remote.url"
            )
    else:
        policy = config.execute or RemotePolicy.NEVER
        if remote is None:
            policy = RemotePolicy.NEVER
    if remote_jobs is not None:
        if remote_jobs < 1:
            raise UsageError(f"--remote-jobs must be at least 1, got {remote_jobs}")
        if policy is RemotePolicy.NEVER:
            raise UsageError("--remote-jobs needs remote execution (--remote-exec auto|always)")
    return RemoteExecution(policy=policy, remote_jobs=remote_jobs, platform=dict(config.platform))
