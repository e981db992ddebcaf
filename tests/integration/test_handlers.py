"""Each handler invoked in-process with its events/ file against the emulator (`sam local invoke -e`)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes.env import restore_environment

from stratus import services
from stratus.models import Chunk, ChunkBatch, DocumentStatus, StageMessage, normalise_version
from stratus.pipeline.common import dump_chunk_batch
from stratus.pipeline.worker import sqs_event
from stratus.settings import get_settings
from stratus_tools.local.stack import LocalStack

pytestmark = pytest.mark.integration

EVENTS = Path(__file__).resolve().parents[2] / "events"
GUIDE = (
    b"# Getting started\n\n## Running the tests\n\nRun make test: it sets up the virtual environment, "
    b"builds the model and runs pytest.\n\n## Deploying\n\n"
    b"sam build and sam deploy --guided put Stratus on AWS.\n"
)


def load_event(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / f"{name}.json").read_text())
    return event


def stage_message(name: str) -> StageMessage:
    return StageMessage.model_validate_json(load_event(name)["Records"][0]["body"])


def drain_bodies(stack: LocalStack, queue: str) -> list[str]:
    sqs = stack.client("sqs")
    response = sqs.receive_message(
        QueueUrl=stack.queue_urls[queue], MaxNumberOfMessages=10, WaitTimeSeconds=1
    )
    messages = response.get("Messages", [])
    for m in messages:
        sqs.delete_message(QueueUrl=stack.queue_urls[queue], ReceiptHandle=m["ReceiptHandle"])
    return [m["Body"] for m in messages]


def drain(stack: LocalStack, queue: str) -> list[StageMessage]:
    return [StageMessage.model_validate_json(body) for body in drain_bodies(stack, queue)]


@pytest.fixture
def claim_checks() -> Iterator[None]:
    """Stage outputs go to S3: the events/ samples are messages pointing at staged objects."""
    saved = {"STRATUS_STAGE_INLINE_MAX_BYTES": os.environ.get("STRATUS_STAGE_INLINE_MAX_BYTES")}
    os.environ["STRATUS_STAGE_INLINE_MAX_BYTES"] = "0"
    get_settings.cache_clear()
    yield
    restore_environment(saved)
    get_settings.cache_clear()


@pytest.mark.usefixtures("claim_checks")
def test_fetch_handler_stages_the_uploaded_document(idle_stack: LocalStack) -> None:
    # given the object the sample S3 notification names
    event = load_event("fetch")
    notification = json.loads(event["Records"][0]["body"])
    key = notification["Records"][0]["s3"]["object"]["key"]
    idle_stack.client("s3").put_object(Bucket=idle_stack.plan.bucket, Key=key, Body=GUIDE)
    drain_bodies(idle_stack, "FetchQueue")

    # when the fetch handler gets the event
    response = idle_stack.handler("FetchFunction")(event, idle_stack.context("FetchFunction"))

    # then nothing failed, the document is FETCHED and embed got a pointer to staged chunks
    assert response == {"batchItemFailures": []}
    (message,) = drain(idle_stack, "EmbedQueue")
    record = services.document_table().get(message.collection, message.doc_id)
    assert record is not None
    assert record.status == DocumentStatus.FETCHED
    assert record.chunk_count >= 1
    assert services.blob_store().get_bytes(message.key) is not None


@pytest.mark.usefixtures("claim_checks")
def test_embed_handler_encodes_staged_chunks(idle_stack: LocalStack) -> None:
    # given the staged chunk batch and document record the sample embed event points at
    message = stage_message("embed")
    chunks = [
        Chunk(chunk_id=f"{i:032x}", position=i, text=text, token_count=8)
        for i, text in enumerate(["Run make test to run the suite.", "sam deploy puts Stratus on AWS."])
    ]
    batch = ChunkBatch(
        collection=message.collection,
        doc_id=message.doc_id,
        source=message.source,
        title="Getting started",
        content_sha256=message.content_sha256,
        chunks=chunks,
    )
    services.blob_store().put_bytes(message.key, dump_chunk_batch(batch))
    # (a newer version than the fetch test's upload of the same document, so the write is accepted)
    recorded = services.document_table().record_version(
        message.collection,
        message.doc_id,
        normalise_version("F" * 24),
        DocumentStatus.FETCHED,
        source=message.source,
        content_sha256=message.content_sha256,
        chunk_count=2,
    )
    assert recorded

    # when the embed handler gets the event
    response = idle_stack.handler("EmbedFunction")(load_event("embed"), idle_stack.context("EmbedFunction"))

    # then the vectors are staged, the document is EMBEDDED and index got a pointer
    assert response == {"batchItemFailures": []}
    (forwarded,) = drain(idle_stack, "IndexQueue")
    assert forwarded.key.endswith("embeddings.parquet")
    assert forwarded.key == stage_message("index").key
    record = services.document_table().get(message.collection, message.doc_id)
    assert record is not None
    assert (record.status, record.chunks_embedded, record.chunks_reused) == (DocumentStatus.EMBEDDED, 2, 0)


@pytest.mark.usefixtures("claim_checks")
def test_index_handler_writes_chunks_then_api_and_maintenance_answer(
    idle_stack: LocalStack, api_headers: dict[str, str]
) -> None:
    # given the staged vectors from the embed test, and the sample API event carrying a real key
    message = stage_message("index")
    api_event = load_event("api")
    api_event["headers"].update(api_headers)
    api_event["multiValueHeaders"].update({name: [value] for name, value in api_headers.items()})
    assert services.blob_store().get_bytes(message.key) is not None

    # when the index handler gets the event
    response = idle_stack.handler("IndexFunction")(load_event("index"), idle_stack.context("IndexFunction"))

    # then the document is INDEXED with its chunks in the table
    assert response == {"batchItemFailures": []}
    record = services.document_table().get(message.collection, message.doc_id)
    assert record is not None
    assert (record.status, record.chunk_count) == (DocumentStatus.INDEXED, 2)

    # and the API handler answers the sample API Gateway event with the right chunk first
    api = idle_stack.handler("ApiFunction")(api_event, idle_stack.context("ApiFunction"))
    assert api["statusCode"] == 200
    hits = json.loads(api["body"])["hits"]
    assert hits[0]["text"] == "Run make test to run the suite."
    assert {h["doc_id"] for h in hits} == {message.doc_id}

    # and the maintenance handler compacts the collection it finds
    report = idle_stack.handler("MaintenanceFunction")(
        load_event("maintenance"), idle_stack.context("MaintenanceFunction")
    )
    assert report["collections"][0]["collection"] == message.collection
    assert report["collections"][0]["rows"] == 2


def as_sqs_event(body: str) -> dict[str, Any]:
    return sqs_event([{"MessageId": "m-1", "ReceiptHandle": "r-1", "Body": body}])


def test_small_outputs_travel_inline_from_fetch_to_index(idle_stack: LocalStack) -> None:
    # given a small document uploaded under a collection of its own, with default settings
    event = load_event("fetch")
    notification = json.loads(event["Records"][0]["body"])
    key = "inbox/inline/guide.md"
    notification["Records"][0]["s3"]["object"]["key"] = key
    event["Records"][0]["body"] = json.dumps(notification)
    s3 = idle_stack.client("s3")
    s3.put_object(Bucket=idle_stack.plan.bucket, Key=key, Body=GUIDE)
    drain_bodies(idle_stack, "FetchQueue")

    # when fetch, embed and index each handle what the stage before handed over
    assert idle_stack.handler("FetchFunction")(event, idle_stack.context("FetchFunction")) == {
        "batchItemFailures": []
    }
    (to_embed,) = drain_bodies(idle_stack, "EmbedQueue")
    embed = idle_stack.handler("EmbedFunction")(as_sqs_event(to_embed), idle_stack.context("EmbedFunction"))
    (to_index,) = drain_bodies(idle_stack, "IndexQueue")
    index = idle_stack.handler("IndexFunction")(as_sqs_event(to_index), idle_stack.context("IndexFunction"))

    # then both hand-overs carried the output itself, nothing was staged in S3, and the document
    # is INDEXED with every chunk
    assert embed == {"batchItemFailures": []}
    assert index == {"batchItemFailures": []}
    for body in (to_embed, to_index):
        message = StageMessage.model_validate_json(body)
        assert message.payload
        assert message.key == ""
    staged = s3.list_objects_v2(Bucket=idle_stack.plan.bucket, Prefix="staging/inline/")
    assert staged.get("KeyCount", 0) == 0
    message = StageMessage.model_validate_json(to_index)
    record = services.document_table().get("inline", message.doc_id)
    assert record is not None
    assert record.status == DocumentStatus.INDEXED
    assert record.chunk_count >= 1


def test_malformed_stage_message_is_reported_as_a_batch_item_failure(idle_stack: LocalStack) -> None:
    # given an index batch with one good (stale, hence skipped) record and one malformed record
    event = load_event("index")
    bad = dict(event["Records"][0], messageId="bad-1", body="{not json")
    event["Records"].append(bad)

    # when the index handler gets it
    response = idle_stack.handler("IndexFunction")(event, idle_stack.context("IndexFunction"))

    # then only the malformed record is retried (and so reaches the DLQ after maxReceiveCount)
    assert response == {"batchItemFailures": [{"itemIdentifier": "bad-1"}]}


def test_index_handler_gives_up_on_the_last_attempt_and_a_redrive_resumes(idle_stack: LocalStack) -> None:
    # given an EMBEDDED document whose staged vectors cannot be read yet (a transient fault)
    import numpy as np

    from stratus.pipeline.embed import to_parquet
    from stratus.stores.schema import chunk_rows

    batch = ChunkBatch(
        collection="giveup",
        doc_id="9" * 32,
        source="giveup.md",
        content_sha256="a" * 64,
        chunks=[Chunk(chunk_id="c" * 32, position=0, text="The numbat eats termites.", token_count=6)],
    )
    key = f"staging/giveup/{batch.doc_id}/{batch.content_sha256}/embeddings.parquet"
    table = services.document_table()
    table.record_version(
        "giveup",
        batch.doc_id,
        normalise_version("A1"),
        DocumentStatus.FETCHED,
        source="giveup.md",
        content_sha256=batch.content_sha256,
    )
    assert table.advance("giveup", batch.doc_id, batch.content_sha256, DocumentStatus.EMBEDDED)
    services.blob_store().put_bytes(key, b"not parquet yet")
    message = StageMessage(
        collection="giveup",
        doc_id=batch.doc_id,
        source="giveup.md",
        content_sha256=batch.content_sha256,
        key=key,
    )
    event = load_event("index")
    record = event["Records"][0]
    record.update(messageId="giveup-1", body=message.model_dump_json())
    max_receives = idle_stack.plan.queues["IndexQueue"].max_receive_count
    assert max_receives is not None
    handler = idle_stack.handler("IndexFunction")

    # when it fails on an earlier receive, then on the queue's last one
    record["attributes"]["ApproximateReceiveCount"] = str(max_receives - 1)
    early = handler(event, idle_stack.context("IndexFunction"))
    after_early = table.get("giveup", batch.doc_id)
    record["attributes"]["ApproximateReceiveCount"] = str(max_receives)
    last = handler(event, idle_stack.context("IndexFunction"))

    # then both are retried (the last goes to the DLQ); only the last marks the document FAILED, saying why
    assert early == last == {"batchItemFailures": [{"itemIdentifier": "giveup-1"}]}
    assert after_early is not None
    assert after_early.status == DocumentStatus.EMBEDDED
    failed = table.get("giveup", batch.doc_id)
    assert failed is not None
    assert failed.status == DocumentStatus.FAILED
    assert failed.error is not None
    assert failed.error.startswith(f"index: gave up after {max_receives} attempts (")
    assert "the message is in the index dead-letter queue" in failed.error
    assert "stratus dlq redrive --stage index" in failed.error

    # and when the cause is fixed and the message is redriven (received afresh), the document is indexed
    services.blob_store().put_bytes(key, to_parquet(chunk_rows(batch, np.ones((1, 4), dtype=np.float32), {})))
    record["attributes"]["ApproximateReceiveCount"] = "1"
    redriven = handler(event, idle_stack.context("IndexFunction"))
    assert redriven == {"batchItemFailures": []}
    indexed = table.get("giveup", batch.doc_id)
    assert indexed is not None
    assert (indexed.status, indexed.chunk_count, indexed.error) == (DocumentStatus.INDEXED, 1, None)
    chunks = services.chunk_store().open("giveup")
    assert chunks is not None
    assert chunks.count_rows() == 1
