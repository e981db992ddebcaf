"""A thread-safe circuit breaker per provider: closed, open, half-open.

Closed: calls go through; `failure_threshold` consecutive retryable failures open it. Open: calls
are refused until the cooldown ends (a 429's Retry-After opens it at once for that long, capped).
Half-open: one probe call is let through; its success closes the circuit, its failure opens it again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from enum import StrEnum


class BreakerState(StrEnum):
    """The three states of a circuit."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class CircuitBreaker:
    """One provider's circuit; `clock` is injectable for tests."""

    def __init__(
        self,
        name: str,
        failure_threshold: int = 3,
        cooldown_s: float = 30.0,
        max_cooldown_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.failure_threshold = max(1, failure_threshold)
        self.cooldown_s = cooldown_s
        self.max_cooldown_s = max_cooldown_s
        self._clock = clock
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._open_until = 0.0
        self._probe_in_flight = False

    @property
    def state(self) -> BreakerState:
        """The state now (an open circuit whose cooldown ended reads half-open)."""
        with self._lock:
            return self._current()

    def _current(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self._clock() >= self._open_until:
            self._state = BreakerState.HALF_OPEN
            self._probe_in_flight = False
        return self._state

    def retry_in(self) -> float:
        """Seconds until an open circuit lets a probe through (0 when it would now)."""
        with self._lock:
            if self._current() is BreakerState.OPEN:
                return max(0.0, self._open_until - self._clock())
            return 0.0

    def allow(self) -> bool:
        """Whether a call may go now; in half-open, True for exactly one caller until it reports."""
        with self._lock:
            state = self._current()
            if state is BreakerState.CLOSED:
                return True
            if state is BreakerState.HALF_OPEN and not self._probe_in_flight:
                self._probe_in_flight = True
                return True
            return False

    def record_success(self) -> None:
        """A call succeeded: the circuit closes."""
        with self._lock:
            self._state = BreakerState.CLOSED
            self._failures = 0
            self._probe_in_flight = False

    def record_failure(self, retry_after_s: float | None = None) -> None:
        """A retryable failure; a Retry-After (429) opens the circuit at once for that long."""
        with self._lock:
            state = self._current()
            self._failures += 1
            self._probe_in_flight = False
            if retry_after_s is not None and retry_after_s > 0:
                self._open(max(min(retry_after_s, self.max_cooldown_s), 0.0))
            elif state is BreakerState.HALF_OPEN or self._failures >= self.failure_threshold:
                self._open(self.cooldown_s)

    def release(self) -> None:
        """A call ended without a verdict about the provider's health (e.g. a 400): free the probe."""
        with self._lock:
            self._probe_in_flight = False

    def _open(self, cooldown_s: float) -> None:
        self._state = BreakerState.OPEN
        self._open_until = max(self._open_until, self._clock() + cooldown_s)
