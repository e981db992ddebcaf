"""Per-key token buckets: in memory (one process) or in DynamoDB (shared by every API instance).

A bucket holds up to `burst` tokens and gains `per_s` tokens a second; a request takes one token or
is refused with the seconds until one is there. The DynamoDB backend reads the bucket item and writes
it back only if nobody else wrote it meanwhile (compare-and-set), retrying on a lost race.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from stratus.stores.keys import BucketState, KeyTable

_CAS_ATTEMPTS = 8


@dataclass(frozen=True)
class Limit:
    """A key's bucket: refill per second (0: unlimited) and size."""

    per_s: float
    burst: int


def _take(state: BucketState | None, limit: Limit, now: float) -> tuple[BucketState, float]:
    """The bucket after one request at `now`, and the wait (0 when the request may go ahead)."""
    if state is None:
        tokens = float(limit.burst)
    else:
        elapsed = max(0.0, now - state.updated_at)
        tokens = min(float(limit.burst), state.tokens + elapsed * limit.per_s)
    if tokens >= 1.0:
        return BucketState(tokens - 1.0, now), 0.0
    return BucketState(tokens, now), (1.0 - tokens) / limit.per_s


class Buckets(Protocol):
    """A place token buckets live."""

    def take(self, bucket_id: str, limit: Limit) -> float:
        """Take one token: 0 when allowed, else seconds until a token is available."""
        ...


class MemoryBuckets:
    """Buckets in this process's memory (the local stack, a single API process)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._states: dict[str, BucketState] = {}
        self._lock = threading.Lock()

    def take(self, bucket_id: str, limit: Limit) -> float:
        """Take one token: 0 when allowed, else seconds until a token is available."""
        with self._lock:
            state, wait = _take(self._states.get(bucket_id), limit, self._clock())
            if wait == 0:
                self._states[bucket_id] = state
            return wait


class DynamoBuckets:
    """Buckets as items of the API keys table, updated with conditional writes.

    The state this instance last wrote is assumed current, so the usual request is one conditional
    write; when another instance wrote meanwhile, the write fails and the item is read. A remembered
    state never has fewer tokens than the stored one (others only spend), so a refusal needs no read.
    """

    def __init__(self, table: KeyTable, clock: Callable[[], float] = time.time) -> None:
        self._table = table
        self._clock = clock
        self._last: dict[str, BucketState] = {}
        self._lock = threading.Lock()

    def take(self, bucket_id: str, limit: Limit) -> float:
        """Take one token: 0 when allowed, else seconds until a token is available."""
        with self._lock:
            seen = self._last.get(bucket_id)
        known = seen is not None
        for _ in range(_CAS_ATTEMPTS):
            if not known:
                seen = self._table.bucket(bucket_id)
            state, wait = _take(seen, limit, self._clock())
            if wait > 0:
                return wait
            if self._table.replace_bucket(bucket_id, seen, state):
                with self._lock:
                    self._last[bucket_id] = state
                return 0.0
            known = False
        # Lost every race: the bucket is contended right now, so ask the client to come back shortly.
        return 1.0 / limit.per_s


class RateLimiter:
    """Applies each key's limit (its own override, else the default) to its bucket."""

    def __init__(self, buckets: Buckets, default: Limit) -> None:
        self.buckets = buckets
        self.default = default

    def limit_for(self, per_s: float | None, burst: int | None) -> Limit:
        """A key's effective limit: its overrides, else the defaults."""
        return Limit(
            per_s=self.default.per_s if per_s is None else per_s,
            burst=self.default.burst if burst is None else burst,
        )

    def check(self, key_id: str, per_s: float | None = None, burst: int | None = None) -> float:
        """0 when the key may make a request now, else the seconds until it may."""
        limit = self.limit_for(per_s, burst)
        if limit.per_s <= 0:
            return 0.0
        return self.buckets.take(key_id, limit)
