"""boto3 clients built from settings (one per service and process)."""

from __future__ import annotations

from functools import cache
from typing import Any

from stratus.settings import Settings, get_settings


def call_budget_s(settings: Settings, read_timeout_s: float | None = None) -> float:
    """Worst-case seconds one SDK call may take: every attempt timing out, plus the retry backoffs."""
    read = settings.aws_read_timeout_s if read_timeout_s is None else read_timeout_s
    attempts = settings.aws_max_attempts
    # Standard mode waits rand(0, 1) x min(2**i, 20) s before retry i (throttling; others 50 ms scale).
    backoff = sum(min(2.0**i, 20.0) for i in range(attempts - 1))
    return attempts * (settings.aws_connect_timeout_s + read) + backoff


def make_client(service: str, settings: Settings, read_timeout_s: float | None = None) -> Any:
    """A boto3 client for `service`, pointed at the emulator when one is configured.

    Timeouts and attempts are bounded (standard retry mode, not adaptive: its client-side rate limiter
    may sleep without bound); `read_timeout_s` replaces the setting for long polls.
    """
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"total_max_attempts": settings.aws_max_attempts, "mode": "standard"},
        connect_timeout=settings.aws_connect_timeout_s,
        read_timeout=settings.aws_read_timeout_s if read_timeout_s is None else read_timeout_s,
        max_pool_connections=32,
    )
    return boto3.client(
        service,  # type: ignore[call-overload]
        region_name=settings.region,
        endpoint_url=settings.aws_endpoint_url,
        config=config,
    )


@cache
def client(service: str) -> Any:
    """The process-wide client for `service` (created on first use)."""
    return make_client(service, get_settings())


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
