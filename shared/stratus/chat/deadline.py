"""One deadline per chat request, and the way to abort the provider call in flight.

A chat request may make several provider calls (the follow-up rewrite, then the answer down the
fallback chain); they all share one `Deadline`. Each call registers an abort (shutting its socket)
with `guard`: it fires when the deadline passes — even while bytes trickle in, which a per-read
timeout never catches — or when the request is cancelled because the client went away.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import Any

LAMBDA_CONTEXT_KEY = "aws.context"  # where Mangum puts the Lambda context in the ASGI scope


class Deadline:
    """When the request must be finished, and whether it was cancelled; thread-safe."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.expires_at = clock() + max(seconds, 0.0)
        self._lock = threading.Lock()
        self._aborts: dict[int, Callable[[], None]] = {}
        self._next = 0
        self.cancelled = False
        self.reason = ""

    @classmethod
    def for_request(
        cls, settings_bound_s: float, margin_s: float, scope: Mapping[str, Any] | None
    ) -> Deadline:
        """The tighter of the settings' bound and the Lambda invocation's remaining time less a margin."""
        seconds = settings_bound_s
        context = (scope or {}).get(LAMBDA_CONTEXT_KEY)
        remaining = getattr(context, "get_remaining_time_in_millis", None)
        if callable(remaining):
            with suppress(TypeError, ValueError):
                seconds = min(seconds, float(remaining()) / 1000.0 - margin_s)
        return cls(seconds)

    def remaining(self) -> float:
        """Seconds left (0 once passed)."""
        return max(0.0, self.expires_at - self._clock())

    def expired(self) -> bool:
        """Whether the deadline has passed."""
        return self._clock() >= self.expires_at

    @property
    def done(self) -> bool:
        """Cancelled, or out of time: no new provider call should start."""
        return self.cancelled or self.expired()

    def cancel(self, reason: str = "the client went away") -> None:
        """Cancel the request: every registered abort runs now (idempotent)."""
        with self._lock:
            if self.cancelled:
                return
            self.cancelled = True
            self.reason = reason
            aborts = list(self._aborts.values())
        for abort in aborts:
            _quietly(abort)

    @contextmanager
    def guard(self, abort: Callable[[], None]) -> Iterator[None]:
        """Run `abort` if the deadline passes or the request is cancelled while the block runs."""
        with self._lock:
            key = self._next
            self._next += 1
            self._aborts[key] = abort
            cancelled = self.cancelled
        if cancelled:
            _quietly(abort)
        timer = threading.Timer(self.remaining(), lambda: _quietly(abort))
        timer.daemon = True
        timer.start()
        try:
            yield
        finally:
            timer.cancel()
            with self._lock:
                self._aborts.pop(key, None)


def _quietly(abort: Callable[[], None]) -> None:
    # an abort of a connection that is already gone has nothing to report
    with suppress(Exception):
        abort()
