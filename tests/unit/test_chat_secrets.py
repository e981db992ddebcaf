"""API keys from SSM and Secrets Manager through Powertools parameters (Stubber), cached."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from stratus.chat import secrets
from stratus.settings import Settings


@pytest.fixture(autouse=True)
def fresh() -> Iterator[None]:
    secrets.reset()
    yield
    secrets.reset()


def client(service: str) -> Any:
    return boto3.client(service, region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t")  # type: ignore[call-overload]


def test_ssm_parameter_is_decrypted_and_cached() -> None:
    # given one SSM SecureString, readable once
    ssm = client("ssm")
    stub = Stubber(ssm)
    stub.add_response(
        "get_parameter",
        {
            "Parameter": {
                "Name": "/stratus/openai",
                "Type": "SecureString",
                "Value": "sk-from-ssm",
                "Version": 1,
            }
        },
        {"Name": "/stratus/openai", "WithDecryption": True},
    )
    with stub:
        # when read twice within the cache age
        first = secrets.read_secret("/stratus/openai", Settings(), 300, client=ssm)
        second = secrets.read_secret("/stratus/openai", Settings(), 300)

    # then both reads give the value and only one call reached SSM (a second would find no stub)
    assert first == second == "sk-from-ssm"
    stub.assert_no_pending_responses()


def test_secrets_manager_json_secret_yields_its_api_key_field() -> None:
    # given a JSON secret in Secrets Manager
    sm = client("secretsmanager")
    stub = Stubber(sm)
    stub.add_response(
        "get_secret_value",
        {"Name": "stratus/openai", "SecretString": '{"api_key": "sk-from-secrets-manager"}'},
        {"SecretId": "stratus/openai"},
    )
    with stub:
        value = secrets.read_secret("secretsmanager:stratus/openai", Settings(), 300, client=sm)

    assert value == "sk-from-secrets-manager"
    assert secrets.is_secrets_manager("arn:aws:secretsmanager:us-east-1:123456789012:secret:x")
    assert not secrets.is_secrets_manager("/stratus/openai")
