"""Outbound timeouts fit the functions: every attempt of one call, backoff included, ends before Timeout."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from stratus.settings import Settings
from stratus.stores.aws import call_budget_s, make_client
from stratus.stores.vectors import storage_options_for
from stratus_tools.local.cfn_yaml import load_template

TEMPLATE_PATH = Path(__file__).resolve().parents[2] / "template.yaml"
FUNCTIONS = ["FetchFunction", "EmbedFunction", "IndexFunction", "ApiFunction", "MaintenanceFunction"]


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(TEMPLATE_PATH)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # Settings must come from the template alone, not from a local stack started earlier in the session.
    for name in list(os.environ):
        if name.startswith("STRATUS_"):
            monkeypatch.delenv(name)


def function_settings(template: dict[str, Any], name: str) -> tuple[Settings, int]:
    """A deployed function's settings (the template's literal STRATUS_* values) and its Timeout."""
    variables = dict(template["Globals"]["Function"]["Environment"]["Variables"])
    props = template["Resources"][name]["Properties"]
    variables.update(props.get("Environment", {}).get("Variables", {}))
    literal = {
        k.removeprefix("STRATUS_").lower(): v
        for k, v in variables.items()
        if k.startswith("STRATUS_") and isinstance(v, str)
    }
    timeout = props.get("Timeout", template["Globals"]["Function"].get("Timeout", 3))
    return Settings.model_validate(literal), int(timeout)


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize("function", FUNCTIONS)
def test_one_aws_call_with_all_its_retries_ends_before_the_function_times_out(
    template: dict[str, Any], function: str
) -> None:
    # given the function's settings and Timeout from the template
    settings, timeout = function_settings(template, function)

    # when the worst case of one SDK call is added up (every attempt connects and reads to the limit)
    budget = call_budget_s(settings)

    # then it ends before the function does
    assert settings.aws_max_attempts >= 2, "a transient fault deserves one retry"
    assert budget < timeout, f"{function}: {budget:.1f}s of SDK call > Timeout {timeout}s"


@pytest.mark.usefixtures("clean_env")
def test_one_chat_provider_call_fits_in_the_api_function(template: dict[str, Any]) -> None:
    # given the API function's settings / when one provider call connects and waits to the limit
    settings, timeout = function_settings(template, "ApiFunction")
    # then it ends before API Gateway's 29 s (the router tries the next provider only with time left)
    assert settings.chat_connect_timeout_s + settings.chat_timeout_s < timeout


@pytest.mark.usefixtures("clean_env")
def test_one_url_fetch_with_its_retries_fits_in_the_fetch_function(template: dict[str, Any]) -> None:
    # given the fetch function's settings
    settings, timeout = function_settings(template, "FetchFunction")

    # when one URL times out on every attempt, with the longest backoffs and Retry-After waits
    retries = settings.url_retries
    backoff = sum(settings.url_backoff_base_s * 2**i * 2 for i in range(retries))  # jitter at most doubles
    worst = (retries + 1) * settings.url_timeout_s + backoff + retries * settings.url_retry_after_max_s

    # then it ends before the function does
    assert worst < timeout, f"{worst:.1f}s > {timeout}s"


def test_clients_get_the_configured_timeouts_and_bounded_retries(clean_env: None) -> None:
    # given explicit timeouts
    settings = Settings(aws_connect_timeout_s=1.5, aws_read_timeout_s=4, aws_max_attempts=2)

    # when a client is made, and one for a 20 s long poll
    client = make_client("sqs", settings)
    poller = make_client("sqs", settings, read_timeout_s=24)

    # then botocore carries them, in standard (not adaptive) retry mode
    config = client.meta.config
    assert (config.connect_timeout, config.read_timeout) == (1.5, 4)
    assert config.retries == {"total_max_attempts": 2, "mode": "standard"}
    assert poller.meta.config.read_timeout == 24


def test_lancedb_s3_options_carry_timeouts() -> None:
    # given an S3 LanceDB URI / when its options are built / then both timeouts are set (local paths: none)
    options = storage_options_for("s3://b/lancedb", "eu-west-1", None, connect_timeout_s=2, timeout_s=45)
    assert options["connect_timeout"] == "2000ms"
    assert options["timeout"] == "45000ms"
    assert storage_options_for("/tmp/lancedb", "eu-west-1", None) == {}
