"""The whole local stack: upload, wait until indexed, search, change, delete, poison — nothing lost."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from stratus import services
from stratus.models import DocumentStatus, make_doc_id
from stratus.stores.documents import DocumentRecord
from stratus_tools.local.stack import LocalStack
from stratus_tools.uploads import Upload, upload_files, wait_for_documents

pytestmark = pytest.mark.e2e

COLLECTION = "handbook"
INSTALL = """# Installing

## Requirements

Stratus needs Python 3.11 or newer and make.

## Virtual environment

The first make command creates .venv and installs the pinned dependencies.
"""
CATS = "Cats sleep for most of the day and purr when they are content.\n\nDogs bark at the postman."


def ingest(stack: LocalStack, files: dict[str, str], tmp_path: Path) -> list[DocumentRecord]:
    uploads = []
    for name, text in files.items():
        path = tmp_path / name
        path.write_text(text)
        uploads.append(Upload(path, name))
    started = time.time()
    doc_ids = upload_files(stack.client("s3"), stack.plan.bucket, "inbox/", COLLECTION, uploads)
    return wait_for_documents(services.document_table(), COLLECTION, doc_ids, 120, since=started)


def search(api: str, headers: dict[str, str], query: str, top_k: int = 5) -> list[dict[str, object]]:
    response = httpx.post(
        f"{api}/v1/collections/{COLLECTION}/search", json={"query": query, "top_k": top_k}, headers=headers
    )
    assert response.status_code == 200, response.text
    hits: list[dict[str, object]] = response.json()["hits"]
    return hits


@pytest.fixture(scope="module")
def api(running_stack: LocalStack) -> str:
    return running_stack.serve_api(port=0)


def test_uploaded_documents_become_searchable(
    running_stack: LocalStack, api: str, tmp_path: Path, api_headers: dict[str, str]
) -> None:
    # given two documents uploaded to the inbox
    records = ingest(running_stack, {"install.md": INSTALL, "pets.txt": CATS}, tmp_path)

    # then both are indexed
    assert sorted(r.status for r in records) == [DocumentStatus.INDEXED, DocumentStatus.INDEXED]

    # and a search finds the answer in the right section
    top = search(api, api_headers, "which python version do I need?")[0]
    assert top["source"] == "install.md"
    assert top["section"] == "Installing > Requirements"
    assert "Python 3.11" in str(top["text"])


def test_unchanged_reupload_encodes_nothing(
    running_stack: LocalStack, api: str, tmp_path: Path, api_headers: dict[str, str]
) -> None:
    # given an indexed document
    ingest(running_stack, {"pets.txt": CATS}, tmp_path)
    embed_consumer = next(p for p in running_stack.pollers if p.function.logical_id == "EmbedFunction")
    embeds_before = embed_consumer.invocations

    # when the same bytes are uploaded again
    (record,) = ingest(running_stack, {"pets.txt": CATS}, tmp_path)

    # then the status says so, the embed function never ran, and search holds no duplicate
    assert record.status == DocumentStatus.INDEXED
    assert record.detail == "unchanged re-upload: nothing re-encoded"
    assert embed_consumer.invocations == embeds_before
    hits = search(api, api_headers, "cats purr", top_k=20)
    assert len([h for h in hits if h["source"] == "pets.txt"]) == record.chunk_count


def test_edited_paragraph_reencodes_only_its_chunks(
    running_stack: LocalStack, api: str, tmp_path: Path, api_headers: dict[str, str]
) -> None:
    # given a document of several sections, indexed
    sections = [f"## Part {i}\n\n" + f"Paragraph {i} talks about topic number {i}. " * 30 for i in range(4)]
    (first,) = ingest(running_stack, {"parts.md": "# Parts\n\n" + "\n\n".join(sections)}, tmp_path)
    assert first.status == DocumentStatus.INDEXED

    # when one section is edited
    sections[2] = "## Part 2\n\nThis part now explains the zebra migration instead."
    (second,) = ingest(running_stack, {"parts.md": "# Parts\n\n" + "\n\n".join(sections)}, tmp_path)

    # then only the changed chunks were encoded, the rest reused, and the stale chunk is gone
    assert second.status == DocumentStatus.INDEXED
    assert second.chunks_embedded == 1
    assert second.chunks_reused == second.chunk_count - 1
    table = services.chunk_store().open(COLLECTION)
    assert table is not None
    doc_id = make_doc_id(COLLECTION, "parts.md")
    rows = table.search().where(f"doc_id = '{doc_id}'").limit(None).to_list()
    assert len(rows) == second.chunk_count
    assert not any("topic number 2" in row["text"] for row in rows)
    assert search(api, api_headers, "zebra migration")[0]["source"] == "parts.md"


def test_deleted_document_leaves_search(
    running_stack: LocalStack, api: str, tmp_path: Path, api_headers: dict[str, str]
) -> None:
    # given an indexed document
    (record,) = ingest(running_stack, {"gone.md": "# Gone\n\nThe quokka is a small marsupial."}, tmp_path)
    assert record.status == DocumentStatus.INDEXED
    assert any(h["source"] == "gone.md" for h in search(api, api_headers, "quokka marsupial"))

    # when its object is deleted from the inbox
    running_stack.client("s3").delete_object(
        Bucket=running_stack.plan.bucket, Key=f"inbox/{COLLECTION}/gone.md"
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(
        h["source"] == "gone.md" for h in search(api, api_headers, "quokka marsupial")
    ):
        time.sleep(0.3)

    # then none of its chunks is found any more and its status says DELETED
    assert not any(h["source"] == "gone.md" for h in search(api, api_headers, "quokka marsupial"))
    deleted = services.document_table().get(COLLECTION, record.doc_id)
    assert deleted is not None
    assert deleted.status == DocumentStatus.DELETED


def test_permanent_failure_is_reported_and_acknowledged(running_stack: LocalStack, tmp_path: Path) -> None:
    # given a file type Stratus cannot read and an empty document
    (bad,) = ingest(running_stack, {"empty.md": "   \n\n  "}, tmp_path)

    # then it is FAILED with a readable reason, and nothing waits in the fetch queue
    assert bad.status == DocumentStatus.FAILED
    assert bad.error
    assert "text" in bad.error
    assert running_stack.queue_depth("FetchQueue") == 0


def test_poison_message_reaches_the_dlq_while_the_rest_is_indexed(
    running_stack: LocalStack, api: str, tmp_path: Path, api_headers: dict[str, str]
) -> None:
    # given a malformed message in the index queue next to a good upload
    sqs = running_stack.client("sqs")
    # (the index queue is FIFO: a group of its own, so it holds back nothing but itself)
    sqs.send_message(
        QueueUrl=running_stack.queue_urls["IndexQueue"],
        MessageBody='{"action": "upsert"',
        MessageGroupId="poison",
        MessageDeduplicationId=f"poison-{time.time()}",
    )
    (good,) = ingest(running_stack, {"good.md": "# Good\n\nThe axolotl regrows its limbs."}, tmp_path)

    # then the good document is indexed and searchable
    assert good.status == DocumentStatus.INDEXED
    assert search(api, api_headers, "axolotl limbs")[0]["source"] == "good.md"

    # and the poison message ends in the index DLQ after maxReceiveCount receives
    max_receives = running_stack.plan.queues["IndexQueue"].max_receive_count or 1
    deadline = time.monotonic() + 2.5 * max_receives + 30
    while time.monotonic() < deadline and running_stack.queue_depth("IndexDLQ") == 0:
        time.sleep(0.5)
    dlq = sqs.receive_message(QueueUrl=running_stack.queue_urls["IndexDLQ"], MaxNumberOfMessages=10)
    assert [m["Body"] for m in dlq.get("Messages", [])] == ['{"action": "upsert"']
