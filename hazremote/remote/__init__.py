"""The remote cache tier: settings, channels, the gRPC client, its circuit breaker.

Spec coverage:
* Remote settings (§5) — resolution of flags, environment and config (:mod:`.settings`).
* RC-001..008 — the client (:mod:`hazremote.remote.client`, imported lazily) and :mod:`.breaker`.
* SEC-005 — ``grpcs://`` channels (:mod:`.channel`).
Out of scope: remote execution (RX), and the order in which the executor consults the tiers
(:mod:`hazremote.execute.lifecycle`).
"""

from hazremote.remote.breaker import BreakerState, CircuitBreaker
from hazremote.remote.settings import (
    DEFAULT_NAMESPACE,
    ENV_MODE,
    ENV_NAMESPACE,
    ENV_TIMEOUTS,
    ENV_TOKEN,
    ENV_URL,
    RemoteConfig,
    RemoteFlags,
    RemoteTimeouts,
    parse_remote_url,
    parse_timeouts,
    resolve_remote,
)

__all__ = [
    "DEFAULT_NAMESPACE",
    "ENV_MODE",
    "ENV_NAMESPACE",
    "ENV_TIMEOUTS",
    "ENV_TOKEN",
    "ENV_URL",
    "BreakerState",
    "CircuitBreaker",
    "RemoteConfig",
    "RemoteFlags",
    "RemoteTimeouts",
    "parse_remote_url",
    "parse_timeouts",
    "resolve_remote",
]
