"""The remote cache tier (RC-001..008): settings, the gRPC client, its circuit breaker.

Spec coverage:
* SPEC §5 — remote settings resolution (:mod:`.settings`).
* RC-001..008 — the client (:mod:`hazremote.remote.client`, imported lazily: it loads gRPC,
  which a run without a remote must not pay for) and its breaker (:mod:`.breaker`).
Out of scope: TLS (SEC-005), remote execution (RX), and the order in which the executor
consults the tiers (:mod:`hazremote.execute.lifecycle`).
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
