"""Error kinds that decide retry behaviour across stages."""

from __future__ import annotations


class StratusError(Exception):
    """Base class of Stratus errors."""


class PermanentError(StratusError):
    """Input that will never succeed (unsupported type, empty text, corrupt file): mark FAILED, ack."""


class TransientError(StratusError):
    """A fault worth retrying (throttling, 5xx, timeout): let SQS redeliver."""


class StaleMessageError(StratusError):
    """A message for an older version of a document than the one recorded: drop it."""
