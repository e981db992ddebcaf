"""The key routes behind API Gateway mirror keys into the stage's usage plan (emulator), and locally do not.

Requests go through the ApiFunction handler with an API Gateway event whose requestContext names a REST
API and stage made in the emulator, as on AWS. No test prints a key (tests/plugins/secrets_scan.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse
from botocore.compat import HTTPHeaders
from fastapi.testclient import TestClient

from stratus import services
from stratus.api.app import create_app
from stratus.stores import aws
from stratus.stores.gateway import UsagePlans
from stratus_tools.local.stack import LocalStack

pytestmark = pytest.mark.integration

EVENTS = Path(__file__).resolve().parents[2] / "events"
STAGE = "api"
NEW_KEY = {"name": "gateway client", "collections": ["gw-docs"], "roles": ["read"]}


@pytest.fixture
def fresh_services(idle_stack: LocalStack) -> Iterator[None]:
    """Services (and the process's usage-plan cache) rebuilt for this test, and again afterwards."""
    services.reset()
    yield
    services.reset()


@pytest.fixture
def apigw(idle_stack: LocalStack, fresh_services: None) -> Any:
    return idle_stack.client("apigateway")


def rest_api_with_plan(apigw: Any, plans: int = 1) -> tuple[str, list[str]]:
    """A REST API with a deployed stage, and `plans` usage plans covering it (plus one that does not)."""
    api_id = apigw.create_rest_api(name="stratus-api")["id"]
    root = next(r["id"] for r in apigw.get_resources(restApiId=api_id)["items"] if r["path"] == "/")
    proxy = apigw.create_resource(restApiId=api_id, parentId=root, pathPart="{proxy+}")["id"]
    method = {"restApiId": api_id, "resourceId": proxy, "httpMethod": "ANY"}
    apigw.put_method(**method, authorizationType="NONE", apiKeyRequired=True)
    apigw.put_integration(**method, type="MOCK")
    apigw.create_deployment(restApiId=api_id, stageName=STAGE)
    plan_ids = [
        apigw.create_usage_plan(name=f"plan-{i}", apiStages=[{"apiId": api_id, "stage": STAGE}])["id"]
        for i in range(plans)
    ]
    apigw.create_usage_plan(name="other-stage", apiStages=[{"apiId": api_id, "stage": "other"}])
    return api_id, plan_ids


def api_event(method: str, path: str, key: str, api_id: str, body: Any = None) -> dict[str, Any]:
    """The sample API Gateway event, re-aimed at `method path` of API `api_id`, stage STAGE, with `key`."""
    event: dict[str, Any] = json.loads((EVENTS / "api.json").read_text())
    event.update(
        path=path,
        httpMethod=method,
        pathParameters={"proxy": path.lstrip("/")},
        body=json.dumps(body) if body is not None else None,
    )
    event["headers"]["x-api-key"] = key
    event["multiValueHeaders"]["x-api-key"] = [key]
    context = event["requestContext"]
    context.update(apiId=api_id, stage=STAGE, httpMethod=method, path=f"/{STAGE}{path}")
    context["identity"]["apiKey"] = key
    return event


def invoke(stack: LocalStack, event: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    response = stack.handler("ApiFunction")(event, stack.context("ApiFunction"))
    return response["statusCode"], json.loads(response["body"])


def gateway_key_ids(apigw: Any) -> set[str]:
    return {k["id"] for k in apigw.get_api_keys(limit=500)["items"]}


def test_keys_created_over_http_behind_api_gateway_are_mirrored_into_the_stage_plan_and_disabled_on_revoke(
    idle_stack: LocalStack, apigw: Any, api_headers: dict[str, str]
) -> None:
    # given a REST API stage covered by one usage plan, and an admin key
    api_id, [plan_id] = rest_api_with_plan(apigw)
    admin = api_headers["x-api-key"]

    # when an admin creates a key through API Gateway's event for that stage
    status, created = invoke(idle_stack, api_event("POST", "/v1/keys", admin, api_id, NEW_KEY))

    # then it is created, and an enabled gateway key with the same value is on the stage's plan
    assert status == 201, created.get("detail")
    key, gateway_id = created.pop("key"), created["gateway_key_id"]
    assert gateway_id
    gateway_key = apigw.get_api_key(apiKey=gateway_id, includeValue=True)
    same_value = gateway_key["value"] == key
    assert same_value
    assert gateway_key["enabled"] is True
    assert gateway_key["name"] == f"stratus-{created['key_id']}"
    assert gateway_id in {k["id"] for k in apigw.get_usage_plan_keys(usagePlanId=plan_id)["items"]}
    # and the Stratus key record remembers its gateway key, as the CLI path does
    record = services.key_table().find(created["key_id"])
    assert record is not None
    assert record.gateway_key_id == gateway_id

    # when the admin revokes it through the gateway
    status, revoked = invoke(idle_stack, api_event("DELETE", f"/v1/keys/{created['key_id']}", admin, api_id))

    # then it is revoked, and its gateway key is disabled (kept, like the record)
    assert status == 200, revoked.get("detail")
    assert revoked["revoked_at"] is not None
    assert revoked["gateway_key_id"] == gateway_id
    assert apigw.get_api_key(apiKey=gateway_id)["enabled"] is False


def test_an_explicit_usage_plan_setting_wins_over_the_stage_lookup(
    idle_stack: LocalStack, apigw: Any, api_headers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # given STRATUS_API_USAGE_PLAN_ID naming a plan that is not the stage's
    api_id, [stage_plan] = rest_api_with_plan(apigw)
    chosen = apigw.create_usage_plan(name="chosen", apiStages=[])["id"]
    monkeypatch.setenv("STRATUS_API_USAGE_PLAN_ID", chosen)
    services.reset()

    # when a key is created behind the gateway
    status, created = invoke(
        idle_stack, api_event("POST", "/v1/keys", api_headers["x-api-key"], api_id, NEW_KEY)
    )

    # then its gateway key is on the configured plan only
    assert status == 201, created.get("detail")
    gateway_id = created["gateway_key_id"]
    assert gateway_id in {k["id"] for k in apigw.get_usage_plan_keys(usagePlanId=chosen)["items"]}
    assert gateway_id not in {k["id"] for k in apigw.get_usage_plan_keys(usagePlanId=stage_plan)["items"]}


def test_a_key_the_gateway_refuses_is_revoked_and_the_answer_is_502(
    idle_stack: LocalStack, apigw: Any, api_headers: dict[str, str]
) -> None:
    # given a stage with a plan, and API Gateway refusing to attach keys to it (as without the IAM grant)
    api_id, [plan_id] = rest_api_with_plan(apigw)
    admin = api_headers["x-api-key"]

    def refuse(**_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        error = {"Code": "AccessDeniedException", "Message": "not authorized to perform apigateway:POST"}
        return AWSResponse("https://apigateway", 403, HTTPHeaders(), None), {
            "Error": error,
            "ResponseMetadata": {"HTTPStatusCode": 403},
        }

    # (on the API function's client: the local stack runs the handler as the function's role)
    with aws.use_credentials(idle_stack.credentials["ApiFunction"]):
        aws.client("apigateway").meta.events.register("before-call.api-gateway.CreateUsagePlanKey", refuse)
    known = gateway_key_ids(apigw)

    # when an admin creates a key behind the gateway
    status, answer = invoke(
        idle_stack, api_event("POST", "/v1/keys", admin, api_id, {**NEW_KEY, "name": "refused"})
    )

    # then the answer is 502 naming the key, the plan and the reason, and carries no key
    assert status == 502
    assert "key" not in answer
    assert plan_id in answer["detail"]
    assert "AccessDeniedException" in answer["detail"]
    assert "it was revoked" in answer["detail"]
    # and the new Stratus key is revoked, and the half-made gateway key is disabled, on no plan
    [record] = [r for r in services.key_table().list() if r.name == "refused"]
    assert record.key_id in answer["detail"]
    assert record.revoked_at is not None
    [orphan] = gateway_key_ids(apigw) - known
    assert apigw.get_api_key(apiKey=orphan)["enabled"] is False
    assert orphan not in {k["id"] for k in apigw.get_usage_plan_keys(usagePlanId=plan_id)["items"]}


def test_a_stage_covered_by_two_plans_creates_no_key_and_answers_502(
    idle_stack: LocalStack, apigw: Any, api_headers: dict[str, str]
) -> None:
    # given a stage that two usage plans cover (a gateway key may be on only one of them)
    api_id, plans = rest_api_with_plan(apigw, plans=2)
    keys_before = len(services.key_table().list())

    # when an admin creates a key behind the gateway
    status, answer = invoke(
        idle_stack, api_event("POST", "/v1/keys", api_headers["x-api-key"], api_id, NEW_KEY)
    )

    # then the answer is 502 naming both plans and the setting, and no key was created
    assert status == 502
    assert all(plan in answer["detail"] for plan in plans)
    assert "STRATUS_API_USAGE_PLAN_ID" in answer["detail"]
    assert len(services.key_table().list()) == keys_before


def test_the_stage_lookup_is_cached_per_process(apigw: Any) -> None:
    # given a stage's plan, found once
    api_id, [plan_id] = rest_api_with_plan(apigw)
    plans = UsagePlans(apigw)
    assert plans.of_stage(api_id, STAGE) == (plan_id,)

    # when the plan stops covering the stage
    apigw.update_usage_plan(
        usagePlanId=plan_id,
        patchOperations=[{"op": "remove", "path": "/apiStages", "value": f"{api_id}:{STAGE}"}],
    )

    # then this process keeps its answer, and a new one (a cold start) sees the change
    assert plans.of_stage(api_id, STAGE) == (plan_id,)
    assert UsagePlans(apigw).of_stage(api_id, STAGE) == ()


def test_key_routes_off_api_gateway_never_call_api_gateway(
    apigw: Any, api_headers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # given the app served directly (no Lambda event), and every AWS client the process makes recorded
    requested: list[str] = []
    real_client = aws.client

    def recording_client(service: str) -> Any:
        requested.append(service)
        return real_client(service)

    recording_client.cache_clear = real_client.cache_clear  # type: ignore[attr-defined]
    monkeypatch.setattr(aws, "client", recording_client)
    services.reset()
    known = gateway_key_ids(apigw)

    with TestClient(create_app()) as client:
        # when an admin creates and revokes a key
        created = client.post("/v1/keys", json=NEW_KEY, headers=api_headers)
        assert created.status_code == 201
        body = created.json()
        revoked = client.delete(f"/v1/keys/{body['key_id']}", headers=api_headers)

    # then both work, nothing is mirrored, and no API Gateway client was even made
    assert revoked.status_code == 200
    assert body["gateway_key_id"] is None
    assert "apigateway" not in requested
    assert "dynamodb" in requested
    assert gateway_key_ids(apigw) == known
