"""boto3 clients built from settings (one per service and process)."""

from __future__ import annotations

from functools import cache
from typing import Any

from stratus.settings import Settings, get_settings


def make_client(service: str, settings: Settings) -> Any:
    """A boto3 client for `service`, pointed at the emulator when one is configured."""
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"max_attempts": 5, "mode": "adaptive"},
        connect_timeout=5,
        read_timeout=30,
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
