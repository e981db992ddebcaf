"""Issue 20 finding 10: /docs behind API Gateway's stage prefix loads its schema under that prefix."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from mangum import Mangum

from stratus.api.app import create_app, gateway_prefix

EVENT = json.loads((Path(__file__).resolve().parents[2] / "events" / "api.json").read_text())


class _Context:
    function_name = "api"
    memory_limit_in_mb = 2048
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:api"
    aws_request_id = "req-1"

    def get_remaining_time_in_millis(self) -> int:
        return 29_000


def _get(path: str, stage: str) -> dict[str, Any]:
    event = copy.deepcopy(EVENT)
    event.update(path=path, httpMethod="GET", body=None, isBase64Encoded=False, resource="/{proxy+}")
    event["headers"] = {k: v for k, v in event["headers"].items() if k.lower() != "x-api-key"}
    event["multiValueHeaders"] = {
        k: v for k, v in event["multiValueHeaders"].items() if k.lower() != "x-api-key"
    }
    event["requestContext"].update(path=f"/{stage}{path}", stage=stage)
    response: dict[str, Any] = Mangum(create_app(), lifespan="off")(event, _Context())  # type: ignore[arg-type]
    return response


def test_docs_page_loads_the_schema_under_the_stage_prefix() -> None:
    # Given the API behind the stage "api", a browser without an API key
    # When it opens /api/docs (API Gateway hands the function /docs)
    page = _get("/docs", "api")
    # Then the page asks for /api/openapi.json (not /openapi.json, which API Gateway answers 403)
    assert page["statusCode"] == 200
    assert "'/api/openapi.json'" in page["body"] or '"/api/openapi.json"' in page["body"]
    # And the schema names the prefix as its server, so "Try it out" calls /api/v1/...
    schema = json.loads(_get("/openapi.json", "api")["body"])
    assert schema["servers"] == [{"url": "/api"}]


def test_a_route_named_like_the_stage_still_routes() -> None:
    # Given the stage "v1" and the API's own /v1/... paths (the prefix is added to the path, then stripped)
    # When a keyless request reaches a /v1 route / Then the route is found (it refuses the missing key)
    response = _get("/v1/collections/docs/documents", "v1")
    assert response["statusCode"] == 401, response
    assert _get("/health/live", "v1")["statusCode"] == 200


@pytest.mark.parametrize(
    ("path", "full", "prefix"),
    [
        ("/docs", "/api/docs", "/api"),
        ("/v1/collections", "/v1/v1/collections", "/v1"),
        ("/docs", "/docs", ""),  # a custom domain mapped without a base path
        ("/docs", "/other", ""),
    ],
)
def test_the_prefix_is_what_api_gateway_took_off(path: str, full: str, prefix: str) -> None:
    assert gateway_prefix({"path": path, "requestContext": {"path": full}}) == prefix
