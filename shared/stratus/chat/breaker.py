"""A thread-safe circuit breaker per provider: closed, open, half-open.

Closed: calls go through; `failure_threshold` consecutive retryable failures open it. Open: calls
are refused until the cooldown ends (a 429's Retry-After opens it at once for that long, capped).
Half-open: one probe call is let through; its success closes the circuit, its failure opens it again.
The probe's slot is a lease: a caller that never reports (a bug, a thread that died) loses it after
`probe_lease_s`, so a circuit cannot stay wedged half-open.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum


class BreakerState(StrEnum):
    """The three states of a circuit."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


@dataclass(frozen=True)
class Admission:
    """A call let through by a breaker; `probe` when it holds the half-open probe's slot."""

    probe: bool


class CircuitBreaker:
    """One provider's circuit; `clock` is injectable for tests."""

    def __init__(
        self,
        name: str,
        failure_threshold: int = 3,
        cooldown_s: float = 30.0,
        max_cooldown_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        probe_lease_s: float = 60.0,
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
        self._probe_since = 0.0
        self.probe_lease_s = probe_lease_s

    @property
    def probe_in_flight(self) -> bool:
        """Whether a half-open probe holds the slot now."""
        with self._lock:
            self._current()
            return self._probe_in_flight

    @property
    def state(self) -> BreakerState:
        """The state now (an open circuit whose cooldown ended reads half-open)."""
        with self._lock:
            return self._current()

    def _current(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self._clock() >= self._open_until:
            self._state = BreakerState.HALF_OPEN
            self._probe_in_flight = False
        if self._probe_in_flight and self._clock() - self._probe_since >= self.probe_lease_s:
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
        return self.admit() is not None

    def admit(self) -> Admission | None:
        """Let a call through (None when refused); the admission says whether it holds the probe slot."""
        with self._lock:
            state = self._current()
            if state is BreakerState.CLOSED:
                return Admission(probe=False)
            if state is BreakerState.HALF_OPEN and not self._probe_in_flight:
                self._probe_in_flight = True
                self._probe_since = self._clock()
                return Admission(probe=True)
            return None

    def record_success(self, probe: bool = True) -> None:
        """A call succeeded: the circuit closes."""
        with self._lock:
            self._state = BreakerState.CLOSED
            self._failures = 0
            self._probe_in_flight = False

    def record_failure(self, retry_after_s: float | None = None, probe: bool = True) -> None:
        """A retryable failure; a Retry-After (429) opens the circuit at once for that long (capped).

        A call admitted while the circuit was closed (`probe=False`) that fails after the circuit
        went half-open counts as a failure but leaves the probe's slot to the probe.
        """
        with self._lock:
            state = self._current()
            self._failures += 1
            if probe:
                self._probe_in_flight = False
            if retry_after_s is not None and math.isfinite(retry_after_s) and retry_after_s > 0:
                self._open(min(retry_after_s, self.max_cooldown_s))
            elif (state is BreakerState.HALF_OPEN and probe) or self._failures >= self.failure_threshold:
                self._open(self.cooldown_s)

    def release(self, probe: bool = True) -> None:
        """A call ended without a verdict about the provider's health (a 400, a cancel): free the probe."""
        with self._lock:
            if probe:
                self._probe_in_flight = False

    def _open(self, cooldown_s: float) -> None:
        self._state = BreakerState.OPEN
        self._open_until = max(self._open_until, self._clock() + cooldown_s)
