"""Configuration of ``haz-cache-service serve``: flags > ``HAZ_CACHE_*`` environment > YAML
file > defaults, resolved per item into one frozen :class:`ServiceConfig`.

Spec coverage:
* SVC-003 — configuration by YAML file (``--config FILE`` or ``HAZ_CACHE_CONFIG``), flags and
  ``HAZ_CACHE_*`` environment variables, with that precedence per item.
* §5 — defaults: ``--listen 127.0.0.1:7070``; storage ``file://`` under
  ``$XDG_DATA_HOME/haz/store`` (or ``~/.local/share/haz/store``); port 0 picks a free port.
* SVC-006 — every limit is configurable (``limits:`` in the file, ``--max-*`` flags,
  ``HAZ_CACHE_MAX_*`` variables) and validated against the others.
* EXEC-021 — any unknown key or bad value is a :class:`ServiceConfigError` (exit 2) whose
  message names where the value came from.
* SVC-001 — ``--read-cache-manifest-ttl D`` (``HAZ_CACHE_READ_CACHE_MANIFEST_TTL``,
  ``read_cache_manifest_ttl:``; default 30 s, 0 turns it off): with ``--read-cache``, how long
  a found S3 manifest is served from memory; it needs ``--read-cache``.
* SEC-002 — ``--tokens FILE`` (``HAZ_CACHE_TOKENS``, ``tokens:``): the tokens file's path
  (its content is parsed by :mod:`cache_service.auth`).
* SEC-005 — ``--tls-cert F --tls-key F [--tls-client-ca F]`` (``HAZ_CACHE_TLS_*``,
  ``tls_cert:`` …): certificate and key go together; a client CA needs them.
* Issue 13 — ``--stream-idle-timeout D`` (``HAZ_CACHE_STREAM_IDLE_TIMEOUT``,
  ``stream_idle_timeout:``; default 60 s, positive): a WriteBlob client silent this long is
  dropped with ``DEADLINE_EXCEEDED``.
* Issue 13 — ``--handshake-timeout D`` (``HAZ_CACHE_HANDSHAKE_TIMEOUT``,
  ``handshake_timeout:``; default 10 s, positive): a connection that has not completed its
  HTTP/2 (and TLS) handshake this long after it was accepted is closed.
* Issue 13 — ``--max-streams-per-caller N`` (``HAZ_CACHE_MAX_STREAMS_PER_CALLER``; default 64,
  at most ``max_concurrent_streams``, which lowers it when lowered below it).
Out of scope: ``--queue`` (a later issue); what a storage URL means
(``cache_service.storage.factory``); reading the certificate files (``cache_service.app``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hazremote.domain.units import parse_duration, parse_size
from hazremote.errors import HazError

__all__ = [
    "ENV_PREFIX",
    "SETTINGS",
    "Address",
    "Limits",
    "ServiceConfig",
    "ServiceConfigError",
    "Setting",
    "default_storage_url",
    "parse_address",
    "resolve_config",
]

ENV_PREFIX = "HAZ_CACHE_"
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("console", "json")
MIB = 1 << 20
#: The default of ``limits.max_streams_per_caller``.
STREAMS_PER_CALLER = 64


class ServiceConfigError(HazError):
    """A bad configuration value or key (EXEC-021: exit 2); the message names its source."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Address:
    """A ``HOST:PORT`` to listen on (port 0: pick a free one)."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """SVC-006 limits (sizes in uncompressed bytes unless said otherwise)."""

    max_blob_size: int = 4 << 30
    max_batch_items: int = 1000
    max_batch_total_size: int = 4 * MIB
    #: gRPC message limit (compressed bytes on the wire), both directions.
    max_message_size: int = 8 * MIB
    max_concurrent_streams: int = 256
    #: Issue 13: blob streams one caller (a token, or a peer address without tokens) may
    #: hold at once; a lowered ``max_concurrent_streams`` lowers it too.
    max_streams_per_caller: int = STREAMS_PER_CALLER
    stream_chunk_size: int = 1 * MIB


def default_storage_url(env: Mapping[str, str]) -> str:
    """§5: ``file://`` under ``$XDG_DATA_HOME/haz/store`` or ``~/.local/share/haz/store``."""
    data_home = env.get("XDG_DATA_HOME") or ""
    base = Path(data_home) if os.path.isabs(data_home) else Path.home() / ".local" / "share"
    return (base / "haz" / "store").as_uri()


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceConfig:
    """Everything ``serve`` needs; build directly in tests, or with :func:`resolve_config`."""

    listen: Address = field(default_factory=lambda: Address(host="127.0.0.1", port=7070))
    storage: str = field(default_factory=lambda: default_storage_url(os.environ))
    s3_endpoint: str | None = None
    s3_region: str | None = None
    metrics_listen: Address | None = None
    read_cache_dir: Path | None = None
    read_cache_size: int | None = None
    #: With a read cache: seconds a found S3 manifest is served from memory (0: never).
    read_cache_manifest_ttl: float = 30.0
    log_level: str = "info"
    log_format: str = "json"
    #: SVC-005: in-flight RPCs get this long to finish after SIGTERM.
    shutdown_grace: float = 10.0
    #: A WriteBlob client that sends nothing this long is gone (``DEADLINE_EXCEEDED``).
    stream_idle_timeout: float = 60.0
    #: Issue 13: a connection still in its HTTP/2 (and TLS) handshake this long is closed, so
    #: sockets that send half a preface cannot hold file descriptors.
    handshake_timeout: float = 10.0
    #: Issue 13: a disk store's temp file untouched this long belongs to a dead write and is
    #: removed at start-up and by ``gc`` (never less than :data:`MIN_TEMP_GRACE`).
    temp_grace: float = 3600.0
    #: Threads running blocking storage calls.
    storage_threads: int = 32
    limits: Limits = field(default_factory=Limits)
    #: SEC-002: the tokens file; ``None`` means open access (a warning at start).
    tokens: Path | None = None
    #: SEC-005: PEM server certificate chain and private key (TLS when set).
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: SEC-005: PEM CA bundle; when set, clients must present a certificate it signed.
    tls_client_ca: Path | None = None


def parse_address(text: str) -> Address:
    """Parse ``HOST:PORT`` (``[v6]:PORT`` for IPv6).

    Raises:
        ValueError: naming the problem.
    """
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"port must be 0..65535 in {text!r}")
    return Address(host=host, port=int(port_text))


def _choice(options: tuple[str, ...]) -> Callable[[object], str]:
    def parse(value: object) -> str:
        if value not in options:
            raise ValueError(f"expected one of {', '.join(options)}, got {value!r}")
        return str(value)

    return parse


def _text(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a non-empty string, got {value!r}")
    return value


def _address(value: object) -> Address:
    return parse_address(_text(value))


def _positive_int(value: object) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"expected a positive integer, got {value!r}")
    return value


def _positive_size(value: object) -> int:
    size = parse_size(value)
    if size < 1:
        raise ValueError(f"expected a positive size, got {value!r}")
    return size


def _duration(value: object) -> float:
    return parse_duration(value)


def _positive_duration(value: object) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"expected a positive duration, got {value!r}")
    return seconds


#: A shorter temp-file grace could remove the file of a slow write still in flight.
MIN_TEMP_GRACE = 300.0


def _temp_grace(value: object) -> float:
    seconds = parse_duration(value)
    if seconds < MIN_TEMP_GRACE:
        raise ValueError("must be at least 5m (a shorter one could remove a write in flight)")
    return seconds


def _path(value: object) -> Path:
    return Path(_text(value)).expanduser()


@dataclass(frozen=True, slots=True, kw_only=True)
class Setting:
    """One configurable item: its YAML key (dotted under ``limits``), flag and variable."""

    key: str
    parse: Callable[[object], Any]

    @property
    def flag(self) -> str:
        return "--" + self.key.removeprefix("limits.").replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.key.removeprefix("limits.").upper()

    @property
    def dest(self) -> str:
        return self.key.removeprefix("limits.")


#: Every item, in ``--help`` order. ``read_cache`` is the directory, as in ``--read-cache DIR``.
SETTINGS: tuple[Setting, ...] = (
    Setting(key="listen", parse=_address),
    Setting(key="storage", parse=_text),
    Setting(key="s3_endpoint", parse=_text),
    Setting(key="s3_region", parse=_text),
    Setting(key="metrics_listen", parse=_address),
    Setting(key="read_cache", parse=_path),
    Setting(key="read_cache_size", parse=_positive_size),
    Setting(key="read_cache_manifest_ttl", parse=_duration),
    Setting(key="log_level", parse=_choice(LOG_LEVELS)),
    Setting(key="log_format", parse=_choice(LOG_FORMATS)),
    Setting(key="shutdown_grace", parse=_duration),
    Setting(key="stream_idle_timeout", parse=_positive_duration),
    Setting(key="handshake_timeout", parse=_positive_duration),
    Setting(key="temp_grace", parse=_temp_grace),
    Setting(key="storage_threads", parse=_positive_int),
    Setting(key="tokens", parse=_path),
    Setting(key="tls_cert", parse=_path),
    Setting(key="tls_key", parse=_path),
    Setting(key="tls_client_ca", parse=_path),
    Setting(key="limits.max_blob_size", parse=_positive_size),
    Setting(key="limits.max_batch_items", parse=_positive_int),
    Setting(key="limits.max_batch_total_size", parse=_positive_size),
    Setting(key="limits.max_message_size", parse=_positive_size),
    Setting(key="limits.max_concurrent_streams", parse=_positive_int),
    Setting(key="limits.max_streams_per_caller", parse=_positive_int),
    Setting(key="limits.stream_chunk_size", parse=_positive_size),
)
_BY_KEY = {s.key: s for s in SETTINGS}


def _flatten(document: object, source: str) -> dict[str, object]:
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ServiceConfigError(f"{source}: expected a mapping at the top level")
    flat: dict[str, object] = {}
    for key, value in document.items():
        if key == "limits":
            if not isinstance(value, dict):
                raise ServiceConfigError(f"{source}: limits: expected a mapping")
            for sub, sub_value in value.items():
                flat[f"limits.{sub}"] = sub_value
        else:
            flat[str(key)] = value
    unknown = sorted(k for k in flat if k not in _BY_KEY)
    if unknown:
        known = ", ".join(s.key for s in SETTINGS)
        raise ServiceConfigError(f"{source}: unknown key {unknown[0]!r} (known: {known})")
    return flat


def _load_file(path: Path) -> dict[str, object]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ServiceConfigError(f"{path}: cannot read config file: {exc.strerror}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ServiceConfigError(f"{path}: invalid YAML: {exc}") from None
    return _flatten(document, str(path))


def resolve_config(*, flags: Mapping[str, object | None], env: Mapping[str, str]) -> ServiceConfig:
    """Resolve every item: flag > ``HAZ_CACHE_*`` > config file > default (SVC-003).

    Args:
        flags: Parsed flags by :attr:`Setting.dest` (None: not given), plus ``config``.
        env: The process environment.

    Raises:
        ServiceConfigError: an unknown key or a bad value, naming its source.
    """
    config_path = flags.get("config") or env.get(ENV_PREFIX + "CONFIG")
    from_file = _load_file(Path(str(config_path))) if config_path else {}
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        raw: object
        if flags.get(setting.dest) is not None:
            raw, source = flags[setting.dest], setting.flag
        elif env.get(setting.env):
            raw, source = env[setting.env], setting.env
        elif setting.key in from_file:
            raw, source = from_file[setting.key], f"{config_path}: {setting.key}"
        else:
            continue
        try:
            values[setting.key] = setting.parse(raw)
        except ValueError as exc:
            raise ServiceConfigError(f"{source}: {exc}") from None
    given = {k.removeprefix("limits."): v for k, v in values.items() if k.startswith("limits.")}
    if "max_streams_per_caller" not in given and "max_concurrent_streams" in given:
        given["max_streams_per_caller"] = min(STREAMS_PER_CALLER, given["max_concurrent_streams"])
    limits = Limits(**given)
    _check_limits(limits)
    read_cache_dir = values.get("read_cache")
    read_cache_size = values.get("read_cache_size")
    if read_cache_size is not None and read_cache_dir is None:
        raise ServiceConfigError("--read-cache-size needs --read-cache DIR")
    if "read_cache_manifest_ttl" in values and read_cache_dir is None:
        raise ServiceConfigError("--read-cache-manifest-ttl needs --read-cache DIR")
    if ("tls_cert" in values) != ("tls_key" in values):
        raise ServiceConfigError("--tls-cert and --tls-key go together")
    if "tls_client_ca" in values and "tls_cert" not in values:
        raise ServiceConfigError("--tls-client-ca needs --tls-cert and --tls-key")
    return ServiceConfig(
        storage=values.get("storage", default_storage_url(env)),
        s3_endpoint=values.get("s3_endpoint"),
        s3_region=values.get("s3_region"),
        metrics_listen=values.get("metrics_listen"),
        read_cache_dir=read_cache_dir,
        read_cache_size=read_cache_size,
        limits=limits,
        **{
            k: values[k]
            for k in (
                "listen",
                "read_cache_manifest_ttl",
                "log_level",
                "log_format",
                "shutdown_grace",
                "stream_idle_timeout",
                "handshake_timeout",
                "temp_grace",
                "storage_threads",
                "tokens",
                "tls_cert",
                "tls_key",
                "tls_client_ca",
            )
            if k in values
        },
    )


def _check_limits(limits: Limits) -> None:
    if limits.max_streams_per_caller > limits.max_concurrent_streams:
        raise ServiceConfigError(
            f"max_streams_per_caller ({limits.max_streams_per_caller}) cannot exceed "
            f"max_concurrent_streams ({limits.max_concurrent_streams})"
        )
    # A batch or a chunk must fit in one message with room for framing; zstd can expand
    # incompressible data slightly, hence the margin.
    room = limits.max_message_size - 64 * 1024
    if limits.max_batch_total_size > room:
        raise ServiceConfigError(
            f"max_batch_total_size ({limits.max_batch_total_size}) must stay 64 KiB below "
            f"max_message_size ({limits.max_message_size})"
        )
    if limits.stream_chunk_size > room:
        raise ServiceConfigError(
            f"stream_chunk_size ({limits.stream_chunk_size}) must stay 64 KiB below "
            f"max_message_size ({limits.max_message_size})"
        )
