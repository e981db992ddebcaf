"""The Retry-After header of an HTTP response (a provider's 429, a crawled site's 503), read safely."""

from __future__ import annotations

import math
import time
from datetime import UTC
from email.utils import parsedate_to_datetime


def parse_retry_after(value: str | None, cap_s: float | None = None) -> float | None:
    """Seconds of a Retry-After header (delta-seconds or an HTTP date), finite and at most `cap_s`.

    None when absent or unreadable; `inf`, `nan` and overflowing values are unreadable. A date
    without a zone is UTC, as HTTP dates are.
    """
    if not value:
        return None
    value = value.strip()[:64]
    seconds: float | None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            seconds = when.timestamp() - time.time()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    if not math.isfinite(seconds):
        return None
    seconds = max(0.0, seconds)
    return min(seconds, cap_s) if cap_s is not None else seconds
