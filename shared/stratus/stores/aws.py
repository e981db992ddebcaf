"""boto3 clients built from settings (one per service, process and principal)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cache
from typing import Any

from stratus.settings import Settings, get_settings


@dataclass(frozen=True)
class Credentials:
    """One principal's AWS keys: what a Lambda function's role session would hand the SDK."""

    access_key_id: str
    secret_access_key: str
    session_token: str | None = None
    principal: str = ""

    def __repr__(self) -> str:
        return f"Credentials(principal={self.principal!r}, access_key_id={self.access_key_id!r})"


# Unset on Lambda (the SDK's default chain reads the role's keys from the environment). The local
# stack runs every function in one process, so each poller thread and the API set their function's
# role session here, and clients, stores and LanceDB's storage options are built per principal.
_CREDENTIALS: ContextVar[Credentials | None] = ContextVar("stratus_aws_credentials", default=None)


def current_credentials() -> Credentials | None:
    """The credentials set for this thread or task (None: the SDK's default chain)."""
    return _CREDENTIALS.get()


@contextmanager
def use_credentials(credentials: Credentials | None) -> Iterator[None]:
    """Run the block's AWS calls (clients, stores, LanceDB) as `credentials`."""
    token = _CREDENTIALS.set(credentials)
    try:
        yield
    finally:
        _CREDENTIALS.reset(token)


def call_budget_s(settings: Settings, read_timeout_s: float | None = None) -> float:
    """Worst-case seconds one SDK call may take: every attempt timing out, plus the retry backoffs."""
    read = settings.aws_read_timeout_s if read_timeout_s is None else read_timeout_s
    attempts = settings.aws_max_attempts
    # Standard mode waits rand(0, 1) x min(2**i, 20) s before retry i (throttling; others 50 ms scale).
    backoff = sum(min(2.0**i, 20.0) for i in range(attempts - 1))
    return attempts * (settings.aws_connect_timeout_s + read) + backoff


def make_client(
    service: str,
    settings: Settings,
    read_timeout_s: float | None = None,
    credentials: Credentials | None = None,
) -> Any:
    """A boto3 client for `service`, pointed at the emulator when one is configured.

    Timeouts and attempts are bounded (standard retry mode, not adaptive: its client-side rate limiter
    may sleep without bound); `read_timeout_s` replaces the setting for long polls; `credentials`
    (default: the current principal's, else the SDK's chain) sign every call.
    """
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"total_max_attempts": settings.aws_max_attempts, "mode": "standard"},
        connect_timeout=settings.aws_connect_timeout_s,
        read_timeout=settings.aws_read_timeout_s if read_timeout_s is None else read_timeout_s,
        max_pool_connections=32,
    )
    credentials = credentials or current_credentials()
    keys: dict[str, str | None] = {}
    if credentials is not None:
        keys = {
            "aws_access_key_id": credentials.access_key_id,
            "aws_secret_access_key": credentials.secret_access_key,
            "aws_session_token": credentials.session_token,
        }
    return boto3.client(
        service,  # type: ignore[call-overload]
        region_name=settings.region,
        endpoint_url=settings.aws_endpoint_url,
        config=config,
        **keys,
    )


@cache
def _client(service: str, credentials: Credentials | None) -> Any:
    return make_client(service, get_settings(), credentials=credentials)


def client(service: str) -> Any:
    """The process-wide client for `service` and the current principal (created on first use)."""
    return _client(service, current_credentials())


def clear_clients() -> None:
    """Forget every cached client."""
    _client.cache_clear()


# DynamoDB error codes worth a retry: the stores raise them as TransientError (SQS redelivers).
DYNAMODB_TRANSIENT_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
    }
)


def call_dynamodb(dynamodb_client: Any, operation: str, **params: Any) -> dict[str, Any]:
    """One DynamoDB call; throttling and server errors become TransientError."""
    from botocore.exceptions import ClientError

    from stratus.errors import TransientError

    try:
        response: dict[str, Any] = getattr(dynamodb_client, operation)(**params)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in DYNAMODB_TRANSIENT_CODES:
            raise TransientError(f"DynamoDB {operation}: {error}") from error
        raise
    return response


client.cache_clear = clear_clients  # type: ignore[attr-defined]  # (callers of the @cache era)
