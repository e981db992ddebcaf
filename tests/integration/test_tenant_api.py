"""Issue 19's low items and issue 21's search/key edge cases over the API, against the emulator:
trailing newlines, crafted cursors, unsearchable queries, the documents list of another collection."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from stratus.api.app import create_app
from stratus_tools.local.stack import LocalStack

pytestmark = pytest.mark.integration

COLLECTION = "tenant-low"


@pytest.fixture
def client(idle_stack: LocalStack, api_headers: dict[str, str]) -> Iterator[TestClient]:
    with TestClient(create_app(), headers=api_headers) as test_client:
        yield test_client


def cursor_of(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode()


@pytest.mark.parametrize(
    "cursor",
    [
        cursor_of([1]),
        cursor_of({"collection": {"S": "someone-else"}, "doc_id": {"S": "0" * 32}}),
        cursor_of({"collection": {"S": COLLECTION}, "doc_id": {"N": "1"}}),
        cursor_of({"collection": {"S": COLLECTION}, "doc_id": {"S": "x"}, "extra": {"S": "y"}}),
        cursor_of({"collection": {"S": COLLECTION}}),
        cursor_of({"collection": {"S": COLLECTION}, "doc_id": {"S": ["a"]}}),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
        "%%%",
    ],
)
def test_a_crafted_list_cursor_is_400_not_500(client: TestClient, cursor: str) -> None:
    # given a cursor the API never returned (another shape, another collection's key, bad bytes)
    # when the documents list is read with it
    response = client.get(f"/v1/collections/{COLLECTION}/documents", params={"cursor": cursor})
    # then it is refused as a bad cursor
    assert response.status_code == 400, response.text
    assert "cursor" in response.json()["detail"]


def test_a_chat_model_name_with_a_trailing_newline_is_not_a_collection(client: TestClient) -> None:
    # given a key on every collection
    # when the OpenAI-compatible route is asked for model "stratus/<collection>\n"
    body = {"model": f"stratus/{COLLECTION}\n", "messages": [{"role": "user", "content": "what is new"}]}
    response = client.post("/v1/chat/completions", json=body)
    # then it is an unknown model (404), not a 500 from deeper down
    assert response.status_code == 404, response.text


def test_a_key_for_a_collection_name_with_a_trailing_newline_is_422(client: TestClient) -> None:
    # given an admin key on every collection
    # when it asks for a key on "docs\n"
    spec = {"name": "x", "collections": ["docs\n"], "roles": ["read"]}
    response = client.post("/v1/keys", json=spec)
    # then that is not a collection name
    assert response.status_code == 422, response.json().get("detail")


@pytest.mark.parametrize("query", ["   ", "\t\n", "?!.", "the of and", "The A an"])
def test_unsearchable_queries_are_422_in_search_as_in_chat(client: TestClient, query: str) -> None:
    # given a query of only whitespace, punctuation or stop words
    # when it is searched, and asked as a chat question with no earlier turn
    searched = client.post(f"/v1/collections/{COLLECTION}/search", json={"query": query})
    asked = client.post(
        f"/v1/collections/{COLLECTION}/chat", json={"messages": [{"role": "user", "content": query}]}
    )
    # then both answer 422 naming the query, rather than arbitrary hits
    assert searched.status_code == 422, searched.text
    assert asked.status_code == 422, asked.text
    assert "query" in searched.json()["detail"]


@pytest.mark.parametrize("query", ["café", "日本語", "what is x2"])
def test_queries_with_a_content_word_in_any_script_are_searched(client: TestClient, query: str) -> None:
    # given a query with one content word (non-ASCII included)
    # when it is searched on a collection that has no table
    response = client.post(f"/v1/collections/{COLLECTION}/search", json={"query": query})
    # then it passes the check and reaches the store (404: no such collection)
    assert response.status_code == 404, response.text
