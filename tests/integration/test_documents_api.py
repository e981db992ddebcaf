"""The documents API against the emulator: what it writes into the inbox, what it refuses, deletes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from fastapi.testclient import TestClient

from stratus import services
from stratus.api.app import create_app
from stratus.models import DocumentStatus, StageMessage, make_doc_id, normalise_version
from stratus_tools.local.stack import LocalStack

pytestmark = pytest.mark.integration

COLLECTION = "api-docs"


@pytest.fixture
def client(idle_stack: LocalStack, api_headers: dict[str, str]) -> Iterator[TestClient]:
    with TestClient(create_app(), headers=api_headers) as test_client:
        yield test_client


def inbox_object(stack: LocalStack, path: str) -> bytes | None:
    return services.blob_store().get_bytes(f"inbox/{COLLECTION}/{path}")


def drain(stack: LocalStack, queue: str) -> list[dict[str, Any]]:
    sqs = stack.client("sqs")
    response = sqs.receive_message(
        QueueUrl=stack.queue_urls[queue], MaxNumberOfMessages=10, WaitTimeSeconds=1
    )
    messages: list[dict[str, Any]] = response.get("Messages", [])
    for m in messages:
        sqs.delete_message(QueueUrl=stack.queue_urls[queue], ReceiptHandle=m["ReceiptHandle"])
    return messages


def test_inline_text_and_urls_are_written_into_the_inbox(idle_stack: LocalStack, client: TestClient) -> None:
    # given a body with one text document (with metadata), one without metadata, and two URLs
    body = {
        "documents": [
            {
                "source": "notes/a.md",
                "text": "# A\n\nAlpha text.",
                "metadata": {"team": "blue", "year": 2024},
            },
            {"source": "b.txt", "text": "Bravo text."},
        ],
        "urls": ["https://example.com/page", "https://example.com/page", "http://example.org/x?y=1"],
    }

    # when it is posted
    response = client.post(f"/v1/collections/{COLLECTION}/documents", json=body)

    # then the API accepted four documents, each with its id and a status URL that answers QUEUED
    assert response.status_code == 202, response.text
    answer = response.json()
    accepted = {a["source"]: a for a in answer["accepted"]}
    assert set(accepted) == {"notes/a.md", "b.txt", "https://example.com/page", "http://example.org/x?y=1"}
    assert accepted["notes/a.md"]["doc_id"] == make_doc_id(COLLECTION, "notes/a.md")
    assert accepted["https://example.com/page"]["kind"] == "url"
    status = client.get(accepted["b.txt"]["status_url"])
    assert status.status_code == 200
    assert status.json()["status"] == DocumentStatus.QUEUED.value

    # and the inbox holds the texts, a Bedrock-style sidecar, and one manifest listing each URL once
    assert inbox_object(idle_stack, "notes/a.md") == b"# A\n\nAlpha text."
    assert inbox_object(idle_stack, "b.txt") == b"Bravo text."
    sidecar = inbox_object(idle_stack, "notes/a.md.metadata.json")
    assert sidecar is not None
    assert json.loads(sidecar) == {"metadataAttributes": {"team": "blue", "year": 2024}}
    assert inbox_object(idle_stack, "b.txt.metadata.json") is None
    manifest = inbox_object(idle_stack, answer["manifest"])
    assert manifest == b"https://example.com/page\nhttp://example.org/x?y=1\n"
    drain(idle_stack, "FetchQueue")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"documents": [{"source": "../escape.md", "text": "x"}]}, "documents.0.source"),
        ({"documents": [{"source": "/abs.md", "text": "x"}]}, "documents.0.source"),
        ({"documents": [{"source": "a//b.md", "text": "x"}]}, "documents.0.source"),
        ({"documents": [{"source": "a.exe", "text": "x"}]}, "documents.0.source"),
        ({"documents": [{"source": "_api/urls/x.md", "text": "x"}]}, "documents.0.source"),
        ({"documents": [{"source": "a" * 600 + ".md", "text": "x"}]}, "documents.0.source"),
        ({"documents": [{"source": "a.md", "text": "   "}]}, "documents.0.text"),
        (
            {"documents": [{"source": "a.md", "text": "x"}, {"source": "a.md", "text": "y"}]},
            "documents.1.source",
        ),
        (
            {"documents": [{"source": "a.md", "text": "x", "metadata": {"bad key": 1}}]},
            "documents.0.metadata",
        ),
        (
            {"documents": [{"source": "a.md", "text": "x", "metadata": {"doc_id": "x"}}]},
            "documents.0.metadata",
        ),
        (
            {"documents": [{"source": "a.md", "text": "x", "metadata": {"tags": ["a"]}}]},
            "documents.0.metadata",
        ),
        ({"documents": [{"source": "a.md", "text": "x", "extra": 1}]}, "documents.0.extra"),
        ({"urls": ["file:///etc/passwd"]}, "urls.0"),
        ({"urls": ["https://ok.example/", "http://169.254.169.254/latest"]}, "urls.1"),
        ({"urls": ["http://127.0.0.1:8080/"]}, "urls.0"),
        ({}, "body"),
    ],
)
def test_invalid_submissions_get_a_4xx_naming_the_field(
    idle_stack: LocalStack, client: TestClient, body: dict[str, Any], field: str
) -> None:
    # when an invalid body is posted
    response = client.post(f"/v1/collections/{COLLECTION}/documents", json=body)

    # then the answer is a 422 whose detail starts with the field's name, and nothing was written
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith(field), response.json()
    assert response.json()["errors"][0]["field"] == field


def test_invalid_collection_names_and_unknown_documents_are_refused(client: TestClient) -> None:
    # a bad collection name is a 422 naming the path parameter; an unknown document a 404
    bad = client.post("/v1/collections/Bad Name/documents", json={"urls": ["https://example.com"]})
    assert bad.status_code == 422
    assert bad.json()["detail"].startswith("collection")
    missing = "0" * 32
    assert client.get(f"/v1/collections/{COLLECTION}/documents/{missing}").status_code == 404
    assert client.delete(f"/v1/collections/{COLLECTION}/documents/{missing}").status_code == 404
    assert client.delete(f"/v1/collections/{COLLECTION}/documents/not-an-id").status_code == 422


def test_documents_list_pages_with_a_cursor(idle_stack: LocalStack, client: TestClient) -> None:
    # given five documents submitted to a fresh collection
    docs = [{"source": f"p{i}.md", "text": f"page {i}"} for i in range(5)]
    assert client.post("/v1/collections/paged/documents", json={"documents": docs}).status_code == 202

    # when the list is read two at a time, following next_cursor
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/collections/paged/documents", params=params).json()
        seen.extend(d["source"] for d in page["documents"])
        pages += 1
        cursor = page["next_cursor"]
        if not cursor:
            break

    # then every document appears exactly once, over three pages; a forged cursor is a 400
    assert sorted(seen) == [f"p{i}.md" for i in range(5)]
    assert pages == 3
    assert client.get("/v1/collections/paged/documents", params={"cursor": "garbage"}).status_code == 400
    drain(idle_stack, "FetchQueue")


def test_presigned_upload_puts_bytes_into_the_inbox(idle_stack: LocalStack, client: TestClient) -> None:
    # given a presigned upload for a PDF of a declared size
    data = b"%PDF-1.4 not really a pdf, only bytes to store"
    response = client.post(
        f"/v1/collections/{COLLECTION}/uploads",
        json={"source": "big/report.pdf", "content_type": "application/pdf", "size": len(data)},
    )
    assert response.status_code == 200, response.text
    ticket = response.json()

    # then the URL is a SigV4 URL that binds the size and type, and the document is QUEUED
    query = parse_qs(urlparse(ticket["upload_url"]).query)
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert set(query["X-Amz-SignedHeaders"][0].split(";")) >= {"content-length", "content-type", "host"}
    assert ticket["doc_id"] == make_doc_id(COLLECTION, "big/report.pdf")
    assert client.get(ticket["status_url"]).json()["status"] == "QUEUED"

    # when the bytes are PUT with the returned headers
    put = httpx.put(ticket["upload_url"], content=data, headers=ticket["headers"])

    # then the object is in the inbox
    assert put.status_code == 200, put.text
    assert inbox_object(idle_stack, "big/report.pdf") == data
    drain(idle_stack, "FetchQueue")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"source": "x.pdf", "size": 10**12}, "size"),
        ({"source": "x.pdf", "size": 0}, "size"),
        ({"source": "../x.pdf", "size": 10}, "source"),
        ({"source": "x.exe", "size": 10}, "source"),
        ({"source": "x.pdf", "size": 10, "content_type": "not a type"}, "content_type"),
    ],
)
def test_invalid_upload_requests_name_the_field(client: TestClient, body: dict[str, Any], field: str) -> None:
    response = client.post(f"/v1/collections/{COLLECTION}/uploads", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith(field)


def test_deleting_an_inbox_document_deletes_its_object(idle_stack: LocalStack, client: TestClient) -> None:
    # given a document submitted as text (with metadata)
    body = {"documents": [{"source": "del/me.md", "text": "bye", "metadata": {"k": "v"}}]}
    (accepted,) = client.post(f"/v1/collections/{COLLECTION}/documents", json=body).json()["accepted"]

    # when it is deleted through the API
    response = client.delete(f"/v1/collections/{COLLECTION}/documents/{accepted['doc_id']}")

    # then the inbox object and its sidecar are gone (the S3 event drives the chunk removal)
    assert response.status_code == 202, response.text
    assert inbox_object(idle_stack, "del/me.md") is None
    assert inbox_object(idle_stack, "del/me.md.metadata.json") is None
    drain(idle_stack, "FetchQueue")


def test_deleting_a_url_document_marks_it_deleted_and_tells_index(
    idle_stack: LocalStack, client: TestClient
) -> None:
    # given a URL document that fetch recorded from a manifest event
    url = "https://example.com/indexed"
    doc_id = make_doc_id(COLLECTION, url)
    version = normalise_version("0055AED6DCD90281E5")
    services.document_table().record_version(
        COLLECTION, doc_id, version, DocumentStatus.INDEXED, source=url, content_sha256="ab" * 32
    )
    drain(idle_stack, "IndexQueue")

    # when it is deleted through the API
    response = client.delete(f"/v1/collections/{COLLECTION}/documents/{doc_id}")

    # then it is DELETED at a version just above the one seen (so a redelivered manifest event is stale)
    assert response.status_code == 202, response.text
    record = services.document_table().get(COLLECTION, doc_id)
    assert record is not None
    assert record.status == DocumentStatus.DELETED
    assert record.version > version

    # and the index queue got the delete pointer
    (message,) = drain(idle_stack, "IndexQueue")
    sent = StageMessage.model_validate_json(message["Body"])
    assert (sent.action, sent.doc_id, sent.collection) == ("delete", doc_id, COLLECTION)

    # and a second delete is accepted without sending anything more
    again = client.delete(f"/v1/collections/{COLLECTION}/documents/{doc_id}")
    assert again.status_code == 202
    assert again.json()["detail"] == "already deleted"
    assert drain(idle_stack, "IndexQueue") == []


def test_an_upper_case_sidecar_upload_leaves_no_phantom_document(
    idle_stack: LocalStack, client: TestClient
) -> None:
    # given a presigned upload of an upper-case .METADATA.JSON sidecar
    data = b'{"metadataAttributes": {"team": "red"}}'
    response = client.post(
        f"/v1/collections/{COLLECTION}/uploads",
        json={"source": "notes/c.md.METADATA.JSON", "content_type": "application/json", "size": len(data)},
    )
    assert response.status_code == 200, response.text
    ticket = response.json()
    # then it targets the lower-case sidecar key the pipeline reads, and records no QUEUED document
    assert ticket["source"] == "notes/c.md.metadata.json"
    assert "/notes/c.md.metadata.json?" in ticket["upload_url"]
    assert client.get(ticket["status_url"]).status_code == 404


def test_nfc_and_nfd_sources_are_one_document(idle_stack: LocalStack, client: TestClient) -> None:
    # given the same name submitted in NFC and in NFD
    import unicodedata

    nfc, nfd = unicodedata.normalize("NFC", "café.md"), unicodedata.normalize("NFD", "café.md")
    answers = [
        client.post(
            f"/v1/collections/{COLLECTION}/documents",
            json={"documents": [{"source": name, "text": "# Café"}]},
        ).json()
        for name in (nfc, nfd)
    ]
    # then both name one document, stored under the NFC key
    assert {a["accepted"][0]["doc_id"] for a in answers} == {make_doc_id(COLLECTION, nfc)}
    assert {a["accepted"][0]["source"] for a in answers} == {nfc}
    assert inbox_object(idle_stack, nfd) is None
    drain(idle_stack, "FetchQueue")


def test_a_url_submission_names_where_the_manifest_outcome_is_reported(client: TestClient) -> None:
    response = client.post(
        f"/v1/collections/{COLLECTION}/documents", json={"urls": ["https://example.com/z"]}
    )
    assert response.status_code == 202, response.text
    answer = response.json()
    assert answer["manifest_status_url"] == (
        f"/v1/collections/{COLLECTION}/documents/{make_doc_id(COLLECTION, answer['manifest'])}"
    )


def test_presigned_uploads_are_short_lived_and_bound_to_one_key_type_and_size(client: TestClient) -> None:
    # given a presigned upload ticket with the default settings
    ticket = client.post(
        f"/v1/collections/{COLLECTION}/uploads",
        json={"source": "short/x.md", "content_type": "text/markdown", "size": 5},
    ).json()
    query = parse_qs(urlparse(ticket["upload_url"]).query)
    # then it lives five minutes at most, and signs the one key, its content type and its exact size
    assert int(query["X-Amz-Expires"][0]) <= 300
    assert ticket["expires_in"] <= 300
    assert urlparse(ticket["upload_url"]).path.endswith(f"/inbox/{COLLECTION}/short/x.md")
    assert set(query["X-Amz-SignedHeaders"][0].split(";")) >= {"content-length", "content-type"}
