"""API keys over HTTP against the emulator's keys table: 401/403/429, roles, key routes, CLI, gateway mirror.

No test prints or logs a key: the secrets scan (tests/plugins/secrets_scan.py) fails the session if one
shows up, so assertion messages never carry a response that holds a key.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from stratus import services
from stratus.access.auth import create_key, hash_key, revoke_key
from stratus.access.ratelimit import DynamoBuckets, Limit, RateLimiter
from stratus.api.app import create_app
from stratus_tools.local.stack import LocalStack

pytestmark = pytest.mark.integration

COLLECTION = "auth-docs"
DOCUMENTS = f"/v1/collections/{COLLECTION}/documents"


@pytest.fixture
def configure(idle_stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Set STRATUS_* variables for one test (services rebuilt with them, and again afterwards)."""

    def apply(**variables: str) -> None:
        for name, value in variables.items():
            monkeypatch.setenv(f"STRATUS_{name.upper()}", value)
        services.reset()

    yield apply
    monkeypatch.undo()
    services.reset()


@pytest.fixture
def client(configure: Any) -> Iterator[TestClient]:
    with TestClient(create_app()) as test_client:
        yield test_client


def new_key(roles: list[str], collections: list[str] | None = None, **limits: Any) -> str:
    """A key stored in the emulator's keys table."""
    return create_key(services.key_table(), "test", collections or [COLLECTION], roles, **limits).key


def auth(key: str) -> dict[str, str]:
    return {"x-api-key": key}


def submit(client: TestClient, key: str, collection: str = COLLECTION) -> int:
    body = {"documents": [{"source": "a.md", "text": "# A\n\nSome text."}]}
    return client.post(f"/v1/collections/{collection}/documents", json=body, headers=auth(key)).status_code


# --- 401 ---------------------------------------------------------------------------------------


def test_missing_malformed_unknown_and_revoked_keys_are_401_with_a_challenge(client: TestClient) -> None:
    # given a key that worked and was then revoked through the admin route
    admin, revoked = new_key(["admin"], ["*"]), new_key(["read"])
    assert client.get(DOCUMENTS, headers=auth(revoked)).status_code == 200
    key_id = revoked.split("_")[1]
    assert client.delete(f"/v1/keys/{key_id}", headers=auth(admin)).status_code == 200

    # when requests come with no key, a malformed one, a well-formed unknown one, and the revoked one
    unknown = "strk_000000000000_" + "A" * 43
    responses = [
        client.get(DOCUMENTS),
        client.get(DOCUMENTS, headers=auth("not-a-key")),
        client.get(DOCUMENTS, headers=auth(unknown)),
        client.get(DOCUMENTS, headers=auth(revoked)),
        client.get(DOCUMENTS, headers={"Authorization": "Bearer " + unknown}),
    ]

    # then each is 401 with a WWW-Authenticate challenge (the revocation applied at once in this process)
    assert [r.status_code for r in responses] == [401] * 5
    assert all("Bearer" in r.headers["www-authenticate"] for r in responses)
    assert "required" in responses[0].json()["detail"]


def test_the_bearer_form_is_accepted_like_x_api_key(client: TestClient) -> None:
    # given a read key
    key = new_key(["read"])

    # when it is sent as Authorization: Bearer (what OpenAI clients do)
    response = client.get(DOCUMENTS, headers={"Authorization": f"Bearer {key}"})

    # then it is accepted
    assert response.status_code == 200, response.text


def test_public_routes_need_no_key_and_the_openapi_document_declares_both_schemes(
    client: TestClient,
) -> None:
    # given no key / when the public routes are fetched / then they answer
    for path in ("/health/live", "/docs", "/openapi.json"):
        assert client.get(path).status_code == 200, path
    assert client.get("/health/ready").status_code in (200, 503)

    # and the OpenAPI document shows the key schemes on protected routes only
    spec = client.get("/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["APIKeyHeader"] == {
        "type": "apiKey",
        "in": "header",
        "name": "x-api-key",
        "description": "A Stratus API key (strk_...).",
    }
    assert schemes["HTTPBearer"]["scheme"] == "bearer"
    secured = {"APIKeyHeader", "HTTPBearer"}
    for path, method in [
        ("/v1/collections/{collection}/search", "post"),
        ("/v1/collections/{collection}/documents", "post"),
        ("/v1/chat/completions", "post"),
        ("/v1/keys", "post"),
        ("/v1/keys/{key_id}", "delete"),
    ]:
        names = {name for requirement in spec["paths"][path][method]["security"] for name in requirement}
        assert names == secured, path
    assert "security" not in spec["paths"]["/health/live"]["get"]


# --- 403 ---------------------------------------------------------------------------------------


def test_a_key_of_another_collection_is_403(client: TestClient) -> None:
    # given an admin key on another collection
    other = new_key(["admin"], ["elsewhere"])

    # when it reads, writes and searches this collection
    read = client.get(DOCUMENTS, headers=auth(other))
    search = client.post(f"/v1/collections/{COLLECTION}/search", json={"query": "x"}, headers=auth(other))

    # then each is 403 naming the collection, while its own collection is fine
    assert (read.status_code, search.status_code, submit(client, other)) == (403, 403, 403)
    assert COLLECTION in read.json()["detail"]
    assert client.get("/v1/collections/elsewhere/documents", headers=auth(other)).status_code == 200


def test_roles_cannot_be_escalated(client: TestClient) -> None:
    # given a read key and a write key on the collection
    read, write = new_key(["read"]), new_key(["write"])
    doc_id = "0" * 32

    # then the read key may read but neither write, delete, upload nor manage keys
    assert client.get(DOCUMENTS, headers=auth(read)).status_code == 200
    assert submit(client, read) == 403
    assert client.delete(f"{DOCUMENTS}/{doc_id}", headers=auth(read)).status_code == 403
    upload = {"source": "big.pdf", "content_type": "application/pdf", "size": 10}
    assert (
        client.post(f"/v1/collections/{COLLECTION}/uploads", json=upload, headers=auth(read)).status_code
        == 403
    )
    assert client.get("/v1/keys", headers=auth(read)).status_code == 403
    # and the write key may write (and read) but not manage keys, not even to mint itself an admin key
    assert submit(client, write) == 202
    assert client.get(DOCUMENTS, headers=auth(write)).status_code == 200
    minted = {"name": "me", "collections": [COLLECTION], "roles": ["admin"]}
    assert client.post("/v1/keys", json=minted, headers=auth(write)).status_code == 403
    assert client.get("/v1/keys", headers=auth(write)).status_code == 403


def test_chat_completions_authorizes_against_the_models_collection(client: TestClient) -> None:
    # given a read key on this collection only
    key = new_key(["read"])
    body = {"model": "stratus/elsewhere", "messages": [{"role": "user", "content": "hi"}]}

    # when the OpenAI-compatible route is asked about another collection, with and without the key
    refused = client.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})
    anonymous = client.post("/v1/chat/completions", json=body)

    # then it is 403 in OpenAI's error shape, and 401 without a key
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "permission_denied"
    assert anonymous.status_code == 401


# --- key routes --------------------------------------------------------------------------------


def test_admin_creates_lists_and_revokes_keys_and_the_key_is_shown_once(client: TestClient) -> None:
    # given an admin key on every collection
    admin = new_key(["admin"], ["*"])

    # when it creates a read key
    spec = {"name": "reader", "collections": [COLLECTION], "roles": ["read"], "rate_limit_burst": 7}
    created = client.post("/v1/keys", json=spec, headers=auth(admin))
    assert created.status_code == 201
    body = created.json()
    key = body.pop("key")

    # then the new key works, and the listing shows it without its value or hash
    assert client.get(DOCUMENTS, headers=auth(key)).status_code == 200
    assert body["roles"] == ["read"]
    assert body["rate_limit_burst"] == 7
    listing = client.get("/v1/keys", headers=auth(admin))
    assert listing.status_code == 200
    leaked = key in listing.text or hash_key(key) in listing.text
    assert not leaked
    (listed,) = [k for k in listing.json()["keys"] if k["key_id"] == body["key_id"]]
    assert set(listed) == {
        "key_id",
        "name",
        "collections",
        "roles",
        "created_at",
        "revoked_at",
        "rate_limit_per_s",
        "rate_limit_burst",
        "gateway_key_id",
    }
    assert listed["revoked_at"] is None
    assert listed["gateway_key_id"] is None  # local: no API Gateway to mirror into

    # when it is revoked
    revoked = client.delete(f"/v1/keys/{body['key_id']}", headers=auth(admin))

    # then it stops working at once, the listing says when, and an unknown id is 404
    assert revoked.status_code == 200
    assert client.get(DOCUMENTS, headers=auth(key)).status_code == 401
    (listed,) = [
        k for k in client.get("/v1/keys", headers=auth(admin)).json()["keys"] if k["key_id"] == body["key_id"]
    ]
    assert listed["revoked_at"] is not None
    assert client.delete("/v1/keys/ffffffffffff", headers=auth(admin)).status_code == 404


def test_an_admin_of_one_collection_manages_only_keys_within_it(client: TestClient) -> None:
    # given an admin key on this collection, and a key on another collection
    admin = new_key(["admin"])
    outsider = create_key(services.key_table(), "outsider", ["elsewhere"], ["read"]).record

    # then it may create keys for its collection, but not for another one or for all
    own = {"name": "mine", "collections": [COLLECTION], "roles": ["write"]}
    assert client.post("/v1/keys", json=own, headers=auth(admin)).status_code == 201
    for collections in (["elsewhere"], ["*"], [COLLECTION, "elsewhere"]):
        spec = {"name": "x", "collections": collections, "roles": ["read"]}
        assert client.post("/v1/keys", json=spec, headers=auth(admin)).status_code == 403, collections
    # and it neither sees nor revokes the other collection's key
    listed = {k["key_id"] for k in client.get("/v1/keys", headers=auth(admin)).json()["keys"]}
    assert outsider.key_id not in listed
    assert client.delete(f"/v1/keys/{outsider.key_id}", headers=auth(admin)).status_code == 404
    # and invalid requests are 422
    bad = {"name": "x", "collections": [COLLECTION], "roles": ["owner"]}
    assert client.post("/v1/keys", json=bad, headers=auth(admin)).status_code == 422


# --- rate limits ---------------------------------------------------------------------------------


def test_rate_limit_is_429_with_retry_after_then_recovers_after_the_refill(client: TestClient) -> None:
    # given a key allowed 2 requests at once, refilling 2 per second
    key = new_key(["read"], rate_limit_per_s=2, rate_limit_burst=2)

    # when it makes 3 requests at once
    statuses = [client.get(DOCUMENTS, headers=auth(key)) for _ in range(3)]

    # then the third is 429 with an integer Retry-After of at least 1 second
    assert [r.status_code for r in statuses] == [200, 200, 429]
    assert statuses[2].headers["retry-after"] == "1"
    # and another key is not affected
    assert client.get(DOCUMENTS, headers=auth(new_key(["read"]))).status_code == 200
    # and after the refill (0.5 s a token) the key may go on
    time.sleep(0.6)
    assert client.get(DOCUMENTS, headers=auth(key)).status_code == 200


def test_dynamodb_buckets_are_shared_by_api_instances(configure: Any) -> None:
    # given the DynamoDB backend and a key allowed 3 requests, refilling one per 100 s
    configure(rate_limit_backend="dynamodb")
    key = new_key(["read"], rate_limit_per_s=0.01, rate_limit_burst=3)

    # when one API instance serves 2 requests and a fresh instance (new process state) serves 2 more
    with TestClient(create_app()) as first:
        statuses = [first.get(DOCUMENTS, headers=auth(key)).status_code for _ in range(2)]
    services.reset()
    with TestClient(create_app()) as second:
        statuses += [second.get(DOCUMENTS, headers=auth(key)).status_code for _ in range(2)]
        retry_after = int(second.get(DOCUMENTS, headers=auth(key)).headers["retry-after"])

    # then the second instance saw the first one's spending: the 4th request is refused
    assert statuses == [200, 200, 200, 429]
    assert retry_after >= 1


def test_dynamodb_buckets_never_grant_more_than_the_burst_under_contention(configure: Any) -> None:
    # given two limiters (two API instances) on one DynamoDB bucket of 8 that barely refills
    configure()
    limiters = [RateLimiter(DynamoBuckets(services.key_table()), Limit(0.001, 8)) for _ in range(2)]
    granted: list[bool] = []
    lock = threading.Lock()

    def spend(limiter: RateLimiter) -> None:
        for _ in range(5):
            ok = limiter.check("contended") == 0
            with lock:
                granted.append(ok)

    # when 6 threads spend from it at once
    threads = [threading.Thread(target=spend, args=(limiters[i % 2],)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # then exactly the burst was granted
    assert len(granted) == 30
    assert sum(granted) == 8


# --- cache, CLI and the API Gateway mirror ------------------------------------------------------


def test_a_revocation_elsewhere_takes_effect_within_the_cache_ttl(configure: Any) -> None:
    # given a verified-key cache of 1 second and a key this API instance has just verified
    configure(api_key_cache_s="1")
    key = new_key(["read"])
    with TestClient(create_app()) as client:
        assert client.get(DOCUMENTS, headers=auth(key)).status_code == 200

        # when another process (the CLI) revokes it in the table
        revoke_key(services.key_table(), key.split("_")[1])

        # then this instance may still accept it from its cache, but not after the TTL
        revoked_at = time.monotonic()
        while client.get(DOCUMENTS, headers=auth(key)).status_code == 200:
            assert time.monotonic() - revoked_at < 1.5, "revocation not applied within the cache TTL"
            time.sleep(0.1)


def test_keys_cli_round_trip(configure: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from stratus_tools.keys import main as keys

    # given a key created with `stratus keys create`
    configure(api_key_cache_s="0")
    assert keys(["create", "--name", "cli", "-c", COLLECTION, "-r", "write", "--json"]) == 0
    created = json.loads(capsys.readouterr().out)
    key = created.pop("key")

    with TestClient(create_app()) as client:
        # then it works, and `list` shows it without the key or its hash
        assert submit(client, key) == 202
        assert keys(["list", "--json"]) == 0
        listed = capsys.readouterr().out
        assert created["key_id"] in listed
        leaked = key in listed or hash_key(key) in listed
        assert not leaked

        # when `stratus keys revoke` runs
        assert keys(["revoke", created["key_id"]]) == 0
        assert "revoked" in capsys.readouterr().out

        # then the key is refused, and an unknown id fails
        assert client.get(DOCUMENTS, headers=auth(key)).status_code == 401
    assert keys(["revoke", "ffffffffffff"]) == 1
    assert keys(["create", "--name", "bad", "-c", "Not A Collection"]) == 2
    capsys.readouterr()


def test_keys_cli_mirrors_keys_into_the_api_gateway_usage_plan(
    idle_stack: LocalStack, configure: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from stratus_tools.keys import main as keys

    # given an API Gateway usage plan in the emulator, named by STRATUS_API_USAGE_PLAN_ID
    apigw = idle_stack.client("apigateway")
    api_id = apigw.create_rest_api(name="stratus-api")["id"]
    plan_id = apigw.create_usage_plan(name="plan", apiStages=[])["id"]
    configure(api_usage_plan_id=plan_id)
    assert api_id

    # when a key is created
    assert keys(["create", "--name", "gateway", "-c", COLLECTION, "--json"]) == 0
    created = json.loads(capsys.readouterr().out)
    key = created.pop("key")

    # then an enabled gateway key with the same value is attached to the plan
    gateway_id = created["gateway_key_id"]
    gateway_key = apigw.get_api_key(apiKey=gateway_id, includeValue=True)
    same_value = gateway_key["value"] == key
    assert same_value
    assert gateway_key["enabled"] is True
    assert gateway_id in {k["id"] for k in apigw.get_usage_plan_keys(usagePlanId=plan_id)["items"]}

    # when the key is revoked / then the gateway key is disabled too
    assert keys(["revoke", created["key_id"]]) == 0
    capsys.readouterr()
    assert apigw.get_api_key(apiKey=gateway_id)["enabled"] is False


# --- what a key may grant (issue 19, Medium 8) ------------------------------------------------------


def create_status(client: TestClient, key: str, **spec: Any) -> tuple[int, dict[str, Any]]:
    body = {"name": "child", "collections": [COLLECTION], "roles": ["read"], **spec}
    response = client.post("/v1/keys", json=body, headers=auth(key))
    answer = response.json()
    answer.pop("key", None)  # never kept: the secrets scan fails the session on a key in any output
    return response.status_code, answer


def test_a_key_grants_at_most_its_own_rate_burst_collections_and_role(client: TestClient) -> None:
    # given an admin scoped to one collection, limited to 5 requests/s and a burst of 10
    admin = new_key(["admin"], rate_limit_per_s=5, rate_limit_burst=10)

    # when it asks for children beyond its own rate, burst or collections
    # then each is 403 naming what was refused
    for spec in (
        {"rate_limit_per_s": 0},  # unlimited
        {"rate_limit_per_s": 6},
        {"rate_limit_burst": 11},
        {"collections": ["elsewhere"]},
        {"collections": ["*"]},
    ):
        status, answer = create_status(client, admin, **spec)
        assert status == 403, (spec, answer)
        assert next(iter(k for k in spec)) in answer["detail"] or "collection" in answer["detail"], answer
    # and a child within its limits is made, an unset rate inheriting the admin's (lower than the default)
    status, answer = create_status(client, admin, rate_limit_per_s=2)
    assert status == 201, answer
    assert (answer["rate_limit_per_s"], answer["rate_limit_burst"]) == (2, 10)
    status, answer = create_status(client, admin)
    assert status == 201, answer
    assert (answer["rate_limit_per_s"], answer["rate_limit_burst"]) == (5, 10)


def test_an_unlimited_admin_may_grant_any_rate(client: TestClient) -> None:
    # given an admin on every collection without a rate limit
    admin = new_key(["admin"], ["*"], rate_limit_per_s=0)
    # when it creates an unlimited child, then that is allowed
    status, answer = create_status(client, admin, rate_limit_per_s=0, roles=["admin"])
    assert status == 201, answer
    assert answer["rate_limit_per_s"] == 0


def test_a_key_cannot_grant_a_role_above_its_own() -> None:
    # given a write key (the routes need admin, so this is the library's own check)
    from stratus.access.auth import ForbiddenError, Principal, Role, check_grant

    writer = Principal("000000000000", "w", (COLLECTION,), frozenset({Role.WRITE}))
    # then it may grant read and write, never admin
    assert check_grant(writer, [COLLECTION], ["read", "write"], None, None, 20, 40).rate_limit_per_s is None
    with pytest.raises(ForbiddenError, match="admin"):
        check_grant(writer, [COLLECTION], ["admin"], None, None, 20, 40)


@pytest.mark.parametrize("raw", ["Infinity", "-Infinity", "NaN", "-1", "1e309", "1e300"])
def test_a_non_finite_or_huge_rate_is_422_not_500(client: TestClient, raw: str) -> None:
    # given an admin on every collection, unlimited
    admin = new_key(["admin"], ["*"], rate_limit_per_s=0)
    # when it sends a rate that JSON allows but no bucket can hold
    body = f'{{"name": "x", "collections": ["{COLLECTION}"], "roles": ["read"], "rate_limit_per_s": {raw}}}'
    headers = {**auth(admin), "content-type": "application/json"}
    response = client.post("/v1/keys", content=body, headers=headers)
    # then it is refused as invalid, naming the field
    assert response.status_code == 422, response.text
    assert "rate_limit_per_s" in response.json()["detail"]


@pytest.mark.parametrize(
    "name", ["evil\x1b[2J\x1b[Hname", "admin\u202egpj.exe", "two\nlines", "bell\x07", "zero\u200bwidth"]
)
def test_key_names_with_control_or_bidi_characters_are_422(client: TestClient, name: str) -> None:
    # given an admin key
    admin = new_key(["admin"], ["*"], rate_limit_per_s=0)
    # when it names a key with a terminal escape, a bidi override or another control character
    status, answer = create_status(client, admin, name=name)
    # then the key is refused
    assert status == 422, answer
    assert "name" in answer["detail"]


def test_the_last_admin_key_cannot_be_revoked(client: TestClient) -> None:
    # given a keys table where one admin key, on every collection, is the only active admin
    table = services.key_table()
    for record in table.list():
        if record.revoked_at is None and "admin" in record.roles:
            revoke_key(table, record.key_id)
    admin = create_key(table, "only-admin", ["*"], ["admin"])

    # when it revokes itself, then that is 409 with a message, and the key still works
    response = client.delete(f"/v1/keys/{admin.record.key_id}", headers=auth(admin.key))
    assert response.status_code == 409, response.text
    assert "last active admin key" in response.json()["detail"]
    assert client.get("/v1/keys", headers=auth(admin.key)).status_code == 200

    # and once a second admin exists, the first may go, and then the second is the last one
    second = create_key(table, "second-admin", ["*"], ["admin"])
    assert client.delete(f"/v1/keys/{admin.record.key_id}", headers=auth(second.key)).status_code == 200
    assert client.delete(f"/v1/keys/{second.record.key_id}", headers=auth(second.key)).status_code == 409
    # and an admin of one collection may be revoked while an admin over every collection remains
    scoped = create_key(table, "scoped-admin", [COLLECTION], ["admin"])
    assert client.delete(f"/v1/keys/{scoped.record.key_id}", headers=auth(scoped.key)).status_code == 200


def test_keys_list_neutralises_terminal_escapes_in_names(
    configure: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # given a key record whose name holds terminal escapes and a bidi override (written before names
    # were checked, or straight into the table)
    from stratus.stores.keys import KeyRecord
    from stratus_tools.keys import main as keys

    configure()
    name = "ops\x1b[2J\x1b[31m\u202eevil"
    services.key_table().put(KeyRecord("e" * 64, "eeeeeeeeeeee", name, [COLLECTION], ["read"], time.time()))

    # when `stratus keys list` prints the keys
    assert keys(["list"]) == 0
    out = capsys.readouterr().out

    # then the name is shown with its escapes visible, and no raw control or bidi character is printed
    (line,) = [row for row in out.splitlines() if "eeeeeeeeeeee" in row]
    assert "ops\\x1b[2J\\x1b[31m\\u202eevil" in line
    assert "\x1b" not in out
    assert "\u202e" not in out
