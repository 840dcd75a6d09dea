"""A circuit breaker for the remote cache (pure: the clock is passed in).

Spec coverage:
* RC-003 — repeated failures open it; after a cool-down ONE probe decides; never off for good.
* RC-003 — a probe that never reports back frees the half-open state after another cool-down.
Out of scope: what counts as a failure and the user-facing warning (:mod:`.client`).
"""

from __future__ import annotations

import enum
from collections.abc import Callable

__all__ = ["BreakerState", "CircuitBreaker"]


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"  # one probe call is in flight


class CircuitBreaker:
    """Closed → (``failures`` consecutive failures) → open → (cool-down) → half-open → …

    Not thread-safe: the client uses it from the event loop thread only.
    """

    def __init__(self, *, failures: int, cooldown_s: float, clock: Callable[[], float]) -> None:
        self._threshold = max(1, failures)
        self._cooldown = cooldown_s
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._consecutive = 0
        self._opened_at = 0.0
        self._probe_at = 0.0
        #: How many times the breaker opened (for the end-of-run warning and tests).
        self.openings = 0

    @property
    def state(self) -> BreakerState:
        return self._state

    def allow(self) -> bool:
        """May a call go out now? Moving from open to half-open lets exactly one through."""
        if self._state is BreakerState.CLOSED:
            return True
        now = self._clock()
        if self._state is BreakerState.HALF_OPEN:
            # A probe that never reported back (cancelled) must not wedge the breaker.
            if now - self._probe_at < self._cooldown:
                return False
        elif now - self._opened_at < self._cooldown:
            return False
        self._state = BreakerState.HALF_OPEN
        self._probe_at = now
        return True

    def success(self) -> None:
        self._state = BreakerState.CLOSED
        self._consecutive = 0

    def failure(self) -> None:
        self._consecutive += 1
        if self._state is BreakerState.HALF_OPEN or self._consecutive >= self._threshold:
            if self._state is not BreakerState.OPEN:
                self.openings += 1
            self._state = BreakerState.OPEN
            self._opened_at = self._clock()
