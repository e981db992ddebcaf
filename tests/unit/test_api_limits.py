"""Request limits of the API: every refusal is a 4xx whose message names the field or limit, never a 500."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from stratus.access.auth import Principal, Role
from stratus.api.app import create_app
from stratus.api.deps import principal_dep
from stratus.api.limits import json_depth_exceeds
from stratus.observability import logger
from stratus.settings import Settings

SEARCH = "/v1/collections/docs/search"
CHAT = "/v1/collections/docs/chat"
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    # No store behind it: every request here must be refused before anything is looked up. The key
    # check is not under test here (tests/unit/test_auth.py): an admin key stands in for it.
    app = create_app(Settings(api_max_body_bytes=64 * 1024))
    app.dependency_overrides[principal_dep] = lambda: Principal(
        "k0", "limits", ("*",), frozenset({Role.ADMIN})
    )
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def test_a_body_declared_too_large_is_refused_with_413(client: TestClient) -> None:
    # given a body of 100 KiB against a 64 KiB limit (Content-Length set)
    body = b'{"query": "' + b"a" * 100_000 + b'"}'

    # when it is posted
    response = client.post(SEARCH, content=body, headers=JSON)

    # then 413 names the body and the limit, and the request id still comes back
    assert response.status_code == 413
    assert response.json()["detail"] == f"body: {len(body)} bytes; at most {64 * 1024}"
    assert response.headers["x-request-id"]


def test_a_chunked_body_is_cut_off_at_the_limit(client: TestClient) -> None:
    # given a body streamed in chunks (no Content-Length) that grows past the limit
    sent: list[int] = []

    def chunks() -> Iterator[bytes]:
        for _ in range(100):
            sent.append(1)
            yield b" " * 4096

    # when it is posted
    response = client.post(SEARCH, content=chunks(), headers=JSON)

    # then 413 says the body was larger than the limit
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert response.status_code == 413
    assert response.json()["errors"] == [{"field": "body", "message": f"more than {64 * 1024} bytes"}]


@pytest.mark.parametrize(
    "body", [b"[" * 60_000, b'{"query": "x", "filters": ' + b"[" * 900 + b"]" * 900 + b"}"]
)
def test_deeply_nested_json_is_a_422_not_a_recursion_error(client: TestClient, body: bytes) -> None:
    # given JSON nested far deeper than any request needs (Python's json would overflow)
    # when it is posted
    response = client.post(SEARCH, content=body, headers=JSON)

    # then 422 names the nesting limit
    assert response.status_code == 422
    assert response.json()["detail"] == "body: JSON nested deeper than 32 levels"


def test_100k_open_brackets_within_the_default_size_limit_are_a_422() -> None:
    # given the default limits and 100,000 '[' (well under the default body size)
    app = create_app(Settings())
    with TestClient(app, raise_server_exceptions=False) as default_client:
        # when posted (no key: the body check comes before anything else)
        response = default_client.post(SEARCH, content=b"[" * 100_000, headers=JSON)

    # then 422 names the nesting limit
    assert response.status_code == 422
    assert response.json()["detail"] == "body: JSON nested deeper than 32 levels"


def test_json_depth_ignores_brackets_inside_strings() -> None:
    # given a shallow document whose strings hold many brackets, and an escaped quote
    text = b'{"query": "[[[[[[[[[[ \\" {{{{{{{{{{", "top_k": [[1]]}'
    # when its depth is checked / then only the real nesting (3) counts
    assert not json_depth_exceeds(text, 3)
    assert json_depth_exceeds(text, 2)


CASES: list[tuple[str, dict[str, Any], str]] = [
    (SEARCH, {"query": "x" * 2001}, "query: String should have at most 2000 characters"),
    (SEARCH, {"query": ""}, "query: String should have at least 1 character"),
    (SEARCH, {"query": "x", "top_k": 0}, "top_k: Input should be greater than or equal to 1"),
    (SEARCH, {"query": "x", "top_k": 101}, "top_k: Input should be less than or equal to 100"),
    (SEARCH, {"query": "x", "filters": "year > 1"}, "filters"),
    (SEARCH, {"query": "x", "colour": "red"}, "colour: Extra inputs are not permitted"),
    (CHAT, {"messages": []}, "messages: List should have at least 1 item after validation, not 0"),
    (CHAT, {"messages": [user("q")] * 101}, "messages: List should have at most 100 items after validation"),
    (
        CHAT,
        {"messages": [user("x" * 20001)]},
        "messages.0.content: String should have at most 20000 characters",
    ),
    (CHAT, {"messages": [user("q")], "top_k": 51}, "top_k: Input should be less than or equal to 50"),
    (
        CHAT,
        {"messages": [user("q")], "max_tokens": 9000},
        "max_tokens: Input should be less than or equal to 8192",
    ),
]


@pytest.mark.parametrize(
    ("path", "body", "detail"), CASES, ids=[c[2].split(":")[0] + f"-{i}" for i, c in enumerate(CASES)]
)
def test_out_of_bounds_fields_are_422_naming_the_field(
    client: TestClient, path: str, body: dict[str, Any], detail: str
) -> None:
    # given a request with one field out of its bounds
    # when it is posted
    response = client.post(path, json=body)

    # then 422, and the detail starts with the field's name and says what is wrong
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith(detail)
    assert response.json()["errors"][0]["field"] == detail.split(":")[0]


def test_openai_endpoint_refuses_too_many_messages_with_a_400_naming_messages(client: TestClient) -> None:
    # given an OpenAI-style request with one message longer than a chat message may be
    body = {"model": "stratus/docs", "messages": [user("x" * 20001)]}

    # when it is posted / then the OpenAI error shape names messages
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("messages:")


def test_a_bad_request_id_header_is_replaced_and_a_good_one_echoed(client: TestClient) -> None:
    # given one plain request id and one that would inject a second log field
    good = client.get("/health/live", headers={"x-request-id": "abc-123.4:5"})
    bad = client.get("/health/live", headers={"x-request-id": 'x", "level": "ERROR'})

    # then the plain id is echoed, the other replaced by a generated one
    assert good.headers["x-request-id"] == "abc-123.4:5"
    assert bad.headers["x-request-id"] != 'x", "level": "ERROR'
    assert len(bad.headers["x-request-id"]) == 36


def test_concurrent_requests_never_log_each_others_request_id() -> None:
    # given an app whose (test-only) route logs twice with a pause between, served from the thread pool
    app = create_app(Settings())
    pause = threading.Barrier(8, timeout=10)

    def slow() -> dict[str, str]:
        logger.warning("first")
        pause.wait()  # every request is in flight before any logs its second line
        logger.warning("second")
        return {}

    app.add_api_route("/_test/slow", slow)
    lines: list[dict[str, Any]] = []

    class Capture(logging.Handler):
        def filter(self, record: logging.LogRecord) -> bool:
            return True

        def emit(self, record: logging.LogRecord) -> None:
            lines.append(json.loads(logger.registered_formatter.format(record)))

    capture = Capture()
    logging.getLogger(logger.name).addHandler(capture)

    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            return await asyncio.gather(
                *(client.get("/_test/slow", headers={"x-request-id": f"req-{i}"}) for i in range(8))
            )

    # when eight requests with distinct ids run at once
    try:
        responses = asyncio.run(run())
    finally:
        logging.getLogger(logger.name).removeHandler(capture)

    # then each request's two lines carry its own id, and the id is gone once the request is over
    assert [r.headers["x-request-id"] for r in responses] == [f"req-{i}" for i in range(8)]
    by_id: dict[str, list[str]] = {}
    for line in lines:
        by_id.setdefault(line.get("request_id", ""), []).append(line["message"])
    assert by_id == {f"req-{i}": ["first", "second"] for i in range(8)}
    assert "request_id" not in logger.thread_safe_get_current_keys()
