"""The embed worker (`stratus worker embed`) consumes the embed queue the way the Lambda does."""

from __future__ import annotations

import pytest

from stratus import services
from stratus.models import Chunk, ChunkBatch, DocumentStatus, StageMessage, make_doc_id, normalise_version
from stratus.pipeline.common import dump_chunk_batch, staging_key
from stratus.pipeline.worker import embed_worker
from stratus_tools.local.stack import LocalStack

pytestmark = pytest.mark.integration


def stage_document(collection: str, source: str, texts: list[str]) -> StageMessage:
    doc_id = make_doc_id(collection, source)
    sha = f"{len(texts):064x}"
    batch = ChunkBatch(
        collection=collection,
        doc_id=doc_id,
        source=source,
        content_sha256=sha,
        chunks=[Chunk(chunk_id=f"{i:032x}", position=i, text=t, token_count=4) for i, t in enumerate(texts)],
    )
    key = staging_key("staging/", collection, doc_id, sha, "chunks.json.gz")
    services.blob_store().put_bytes(key, dump_chunk_batch(batch))
    services.document_table().record_version(
        collection, doc_id, normalise_version("A"), DocumentStatus.FETCHED, source=source, content_sha256=sha
    )
    return StageMessage(collection=collection, doc_id=doc_id, source=source, content_sha256=sha, key=key)


def test_worker_embeds_good_messages_and_leaves_bad_ones_for_redelivery(idle_stack: LocalStack) -> None:
    # given one staged document's pointer and one poison message in the embed queue
    message = stage_document("worker", "notes.md", ["GPU workers embed chunks.", "They long-poll SQS."])
    sqs = idle_stack.client("sqs")
    url = idle_stack.queue_urls["EmbedQueue"]
    sqs.send_message(QueueUrl=url, MessageBody=message.model_dump_json())
    sqs.send_message(QueueUrl=url, MessageBody="not a stage message")

    # when the worker handles batches until both messages were seen
    worker = embed_worker(wait_s=1)
    while worker.stats.succeeded + worker.stats.failed < 2:
        worker.run_once()

    # then the document is EMBEDDED and forwarded to index, and only the poison message failed
    assert (worker.stats.succeeded, worker.stats.failed) == (1, 1)
    record = services.document_table().get("worker", message.doc_id)
    assert record is not None
    assert (record.status, record.chunks_embedded) == (DocumentStatus.EMBEDDED, 2)
    forwarded = sqs.receive_message(QueueUrl=idle_stack.queue_urls["IndexQueue"], WaitTimeSeconds=1)[
        "Messages"
    ]
    assert StageMessage.model_validate_json(forwarded[0]["Body"]).doc_id == message.doc_id

    # and the poison message is still in the queue (in flight), to be redelivered and then dead-lettered
    assert idle_stack.queue_depth("EmbedQueue") == 1
