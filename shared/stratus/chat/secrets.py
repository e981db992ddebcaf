"""Provider API keys: from settings, or from SSM Parameter Store / Secrets Manager (Powertools, cached).

A key is never logged, never put in an error message or a response: `ProviderError` messages go
through `errors.redact` with the key before they leave a provider.
"""

from __future__ import annotations

import threading
from typing import Any

from stratus.settings import Settings

SECRETS_PREFIX = "secretsmanager:"

_lock = threading.Lock()
_providers: dict[str, Any] = {}


def _provider(kind: str, settings: Settings, client: Any | None) -> Any:
    """A Powertools parameter provider (SSMProvider or SecretsProvider) over our boto3 client."""
    with _lock:
        cached = _providers.get(kind)
        if cached is not None and client is None:
            return cached
        from aws_lambda_powertools.utilities import parameters

        if client is None:
            from stratus.stores.aws import make_client

            client = make_client("ssm" if kind == "ssm" else "secretsmanager", settings)
        provider = (
            parameters.SSMProvider(boto3_client=client)
            if kind == "ssm"
            else parameters.SecretsProvider(boto3_client=client)
        )
        _providers[kind] = provider
        return provider


def is_secrets_manager(name: str) -> bool:
    """Whether a parameter name refers to Secrets Manager rather than SSM."""
    return name.startswith(SECRETS_PREFIX) or name.startswith("arn:aws:secretsmanager:")


def read_secret(name: str, settings: Settings, max_age_s: int, client: Any | None = None) -> str:
    """The value of an SSM parameter (decrypted) or of a Secrets Manager secret, cached `max_age_s`.

    A JSON secret ({"api_key": ...} or {"key": ...}) yields that field.
    """
    if is_secrets_manager(name):
        secret_id = name.removeprefix(SECRETS_PREFIX)
        value = _provider("secrets", settings, client).get(secret_id, max_age=max_age_s)
    else:
        value = _provider("ssm", settings, client).get(name, decrypt=True, max_age=max_age_s)
    text = value.decode() if isinstance(value, bytes) else str(value)
    stripped = text.strip()
    if stripped.startswith("{"):
        import json

        data = json.loads(stripped)
        for field in ("api_key", "apiKey", "key", "OPENAI_API_KEY"):
            if isinstance(data.get(field), str):
                return str(data[field])
    return stripped


def reset() -> None:
    """Forget the providers and their caches (tests)."""
    with _lock:
        _providers.clear()
