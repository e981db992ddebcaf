"""Provider failures, classified once so that the router knows whether a fallback is allowed."""

from __future__ import annotations

import re
from enum import StrEnum


class FailureKind(StrEnum):
    """Why a provider call failed."""

    RATE_LIMITED = "rate_limited"  # 429: retryable, may carry Retry-After
    SERVER = "server_error"  # 5xx: retryable
    TIMEOUT = "timeout"  # connect/read timeout: retryable
    CONNECTION = "connection_error"  # refused, reset, DNS: retryable
    AUTH = "auth"  # 401/403: never retried, never a fallback
    VALIDATION = "validation"  # 400/404/422: never retried
    CONTEXT_LENGTH = "context_length"  # the prompt is too long for the model: never retried


RETRYABLE = {FailureKind.RATE_LIMITED, FailureKind.SERVER, FailureKind.TIMEOUT, FailureKind.CONNECTION}

_CONTEXT_HINTS = re.compile(
    r"context[_ ]length|context window|maximum context|too many tokens|prompt is too long|"
    r"input is too long|too long for|exceeds the (?:model'?s? )?(?:maximum|context)",
    re.IGNORECASE,
)


class ProviderError(Exception):
    """A failed provider call; `message` never holds a secret (see `redact`)."""

    def __init__(
        self,
        provider: str,
        kind: FailureKind,
        message: str,
        status: int | None = None,
        retry_after_s: float | None = None,
        blames_provider: bool = True,
    ) -> None:
        super().__init__(f"{provider}: {kind.value}: {message}")
        self.provider = provider
        self.kind = kind
        self.message = message
        self.status = status
        self.retry_after_s = retry_after_s
        # False when the call failed for a reason on Stratus' side (its own connection pool, the
        # request's deadline, a cancel): a fallback, but no verdict on the provider's health.
        self.blames_provider = blames_provider

    @property
    def retryable(self) -> bool:
        """429, 5xx, timeouts and connection errors may fall back; auth, validation and context may not."""
        return self.kind in RETRYABLE

    def reason(self) -> str:
        """A short reason for responses and metrics."""
        status = f" {self.status}" if self.status else ""
        return f"{self.kind.value}{status}: {self.message}"[:300]


class MidStreamError(Exception):
    """A provider failed after its first streamed token: the stream ends with an error, no fallback."""

    def __init__(self, error: ProviderError) -> None:
        super().__init__(str(error))
        self.error = error


class NoProviderError(Exception):
    """Every provider of the chain was skipped or failed with a retryable error."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def looks_like_context_length(text: str) -> bool:
    """Whether an error message says that the prompt exceeds the model's context window."""
    return bool(_CONTEXT_HINTS.search(text or ""))


def classify_status(status: int, body: str) -> FailureKind:
    """The failure kind of an HTTP status from an OpenAI-compatible server."""
    if status == 429:
        return FailureKind.RATE_LIMITED
    if status in (408, 409) or status >= 500:
        return FailureKind.SERVER if status != 408 else FailureKind.TIMEOUT
    if status in (401, 403):
        return FailureKind.AUTH
    if status == 413 or looks_like_context_length(body):
        return FailureKind.CONTEXT_LENGTH
    return FailureKind.VALIDATION


_KEYLIKE = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._\-]{8,}|\b(sk|gsk|pk|rk)-[A-Za-z0-9_\-]{8,}")


def redact(text: str, secrets: list[str] | tuple[str, ...] = ()) -> str:
    """`text` with every known secret, and anything shaped like an API key, replaced by ***."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
            # Providers echo keys partly masked ("sk-abc...wxyz"): remove long fragments too.
            for size in (16, 12, 8, 6, 4):
                if len(secret) >= 2 * size:
                    text = text.replace(secret[:size], "***").replace(secret[-size:], "***")
    return _KEYLIKE.sub(lambda m: (m.group(1) or "") + "***", text)


class RequestCancelled(Exception):
    """The chat request was cancelled (the client went away): nothing more is tried."""
