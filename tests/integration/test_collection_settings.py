"""Per-collection chunking through the API and the fetch function on the local stack (IAM enforced)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from stratus import services
from stratus.models import DocumentStatus, make_doc_id
from stratus_tools.local.stack import LocalStack

pytestmark = pytest.mark.integration

EVENTS = Path(__file__).resolve().parents[2] / "events"
# One section of about 220 encoder tokens: over the default 200-token chunk, under the heading budget.
LONG_SECTION = b"# Notes\n\n## Foxes\n\n" + b"The quick brown fox jumps over the lazy dog. " * 22 + b"\n"


@pytest.fixture(scope="module")
def api_url(idle_stack: LocalStack) -> str:
    """The API served over HTTP as the API function's role."""
    return idle_stack.serve_api(port=0)


@pytest.fixture
def client(api_url: str, api_headers: dict[str, str]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api_url, headers=api_headers, timeout=30) as http:
        yield http


def fetch_event(stack: LocalStack, key: str, sequencer: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / "fetch.json").read_text())
    notification = json.loads(event["Records"][0]["body"])
    record = copy.deepcopy(notification["Records"][0])
    record["s3"]["bucket"]["name"] = stack.plan.bucket
    record["s3"]["object"]["key"] = key
    record["s3"]["object"]["sequencer"] = sequencer
    event["Records"][0]["body"] = json.dumps({"Records": [record]})
    return event


def ingest(stack: LocalStack, collection: str, path: str, body: bytes, sequencer: str) -> int:
    """Put `body` into the collection's inbox, run the fetch handler on it, return its chunk count."""
    key = f"inbox/{collection}/{path}"
    stack.client("s3").put_object(Bucket=stack.plan.bucket, Key=key, Body=body)
    response = stack.handler("FetchFunction")(
        fetch_event(stack, key, sequencer), stack.context("FetchFunction")
    )
    assert response == {"batchItemFailures": []}
    record = services.document_table().get(collection, make_doc_id(collection, path))
    assert record is not None
    assert record.status == DocumentStatus.FETCHED, record.detail
    return record.chunk_count


def test_a_collection_chunked_by_heading_keeps_a_section_whole_that_the_default_splits(
    idle_stack: LocalStack, client: httpx.Client
) -> None:
    # given a collection set to heading chunking through the API, and one left at the default
    response = client.put("/v1/collections/by-heading/settings", json={"chunking": "heading"})
    assert response.status_code == 200, response.text
    assert client.get("/v1/collections/by-heading/settings").json()["chunking"] == "heading"
    assert client.get("/v1/collections/by-token/settings").json()["chunking"] == "token"

    # when the fetch function ingests the same long section into both
    by_token = ingest(idle_stack, "by-token", "notes.md", LONG_SECTION, "0A")
    by_heading = ingest(idle_stack, "by-heading", "notes.md", LONG_SECTION, "0A")

    # then the default splits it, heading chunking keeps it one chunk
    assert by_token >= 2
    assert by_heading == 1
    # and the settings item is not listed as a document
    listed = client.get("/v1/collections/by-heading/documents").json()["documents"]
    assert [d["source"] for d in listed] == ["notes.md"]


def test_changing_a_collection_s_chunking_makes_a_re_upload_re_chunk(
    idle_stack: LocalStack, client: httpx.Client
) -> None:
    # given a document ingested with the default chunking
    assert ingest(idle_stack, "switching", "notes.md", LONG_SECTION, "0A") >= 2

    # when the collection switches to heading chunking and the same bytes are uploaded again
    assert client.put("/v1/collections/switching/settings", json={"chunking": "heading"}).status_code == 200
    chunks = ingest(idle_stack, "switching", "notes.md", LONG_SECTION, "0B")

    # then it is re-chunked (not skipped as unchanged) into one chunk
    assert chunks == 1


def test_an_unknown_chunking_mode_is_refused_naming_the_field(client: httpx.Client) -> None:
    # given a settings body with a typo; when it is put; then 422 naming chunking
    response = client.put("/v1/collections/c/settings", json={"chunking": "sentence"})
    assert response.status_code == 422
    assert "chunking" in response.text
