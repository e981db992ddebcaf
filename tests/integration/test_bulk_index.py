"""The index stage's bulk message (`upsert_many`): one commit for its members, each member judged alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stratus import services
from stratus.lifecycle import QUEUED_VERSION, DocumentLifecycle
from stratus.models import BatchMember, Chunk, ChunkBatch, DocumentStatus, StageMessage
from stratus.pipeline.embed import to_parquet
from stratus.pipeline.maintenance import sweep_dead_letters
from stratus.stores.schema import chunk_rows
from stratus_tools.local.stack import LocalStack

pytestmark = pytest.mark.integration

EVENTS = Path(__file__).resolve().parents[2] / "events"
TEXTS = {
    "a": "The numbat eats termites with a long sticky tongue.",
    "b": "The quoll is a spotted marsupial of Australian forests.",
    "c": "The bilby digs burrows in the desert sand.",
}


def batch_of(collection: str, name: str, sha: str = "") -> ChunkBatch:
    doc_id = name * 32
    return ChunkBatch(
        collection=collection,
        doc_id=doc_id,
        source=f"{name}.md",
        content_sha256=sha or name * 64,
        chunks=[
            Chunk(
                chunk_id=f"{name}{i}".ljust(32, "0"), position=i, text=f"{TEXTS[name]} ({i})", token_count=9
            )
            for i in range(2)
        ],
    )


def stage(collection: str, names: list[str]) -> tuple[str, list[ChunkBatch]]:
    """One Parquet of the documents' rows in staging, each recorded EMBEDDED as bulk ingestion does."""
    import pyarrow as pa

    batches = [batch_of(collection, name) for name in names]
    rows = pa.concat_tables([chunk_rows(b, np.ones((2, 4), dtype=np.float32), {}) for b in batches])
    key = f"staging/{collection}/_bulk/{'-'.join(names)}/embeddings.parquet"
    services.blob_store().put_bytes(key, to_parquet(rows))
    lifecycle = DocumentLifecycle(services.document_table())
    for b in batches:
        assert lifecycle.bulk_embedded(
            collection,
            b.doc_id,
            QUEUED_VERSION,
            first=True,
            source=b.source,
            content_sha256=b.content_sha256,
            chunk_count=2,
        )
    return key, batches


def bulk_message(collection: str, key: str, batches: list[ChunkBatch]) -> StageMessage:
    return StageMessage(
        action="upsert_many",
        collection=collection,
        doc_id="bulk-test",
        source="bulk batch",
        content_sha256="f" * 32,
        key=key,
        members=[
            BatchMember(doc_id=b.doc_id, source=b.source, content_sha256=b.content_sha256) for b in batches
        ],
    )


def index_event(message: StageMessage, receive_count: int = 1) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / "index.json").read_text())
    record = event["Records"][0]
    record.update(messageId="bulk-1", body=message.model_dump_json())
    record["attributes"]["ApproximateReceiveCount"] = str(receive_count)
    return event


def test_a_bulk_message_is_one_commit_and_each_member_is_judged_on_its_own_record(
    idle_stack: LocalStack,
) -> None:
    # given three documents staged in one bulk Parquet, and c's record since moved to another version
    key, batches = stage("bulk-one", ["a", "b", "c"])
    table = services.document_table()
    newer = "9" * 64
    assert table.record_version(
        "bulk-one", batches[2].doc_id, "1".rjust(40, "0"), DocumentStatus.FETCHED, content_sha256=newer
    )
    message = bulk_message("bulk-one", key, batches)
    store = services.chunk_store()
    store.write(
        "bulk-one", chunk_rows(batch_of("bulk-one", "c", newer), np.ones((2, 4), np.float32), {}), {}, [], 4
    )
    chunks = store.open("bulk-one")
    assert chunks is not None
    version_before = chunks.version

    # when the index function handles the bulk message
    handler = idle_stack.handler("IndexFunction")
    response = handler(index_event(message), idle_stack.context("IndexFunction"))

    # then nothing is retried, a and b are INDEXED with their rows, c is left to its newer version
    assert response == {"batchItemFailures": []}
    records = table.get_many("bulk-one", [b.doc_id for b in batches])
    assert [records[b.doc_id].status for b in batches] == [
        DocumentStatus.INDEXED,
        DocumentStatus.INDEXED,
        DocumentStatus.FETCHED,
    ]
    assert records[batches[0].doc_id].chunk_count == 2
    chunks.checkout_latest()
    sources = sorted(chunks.search().select(["source"]).limit(None).to_arrow().column("source").to_pylist())
    assert sources == ["a.md", "a.md", "b.md", "b.md", "c.md", "c.md"]
    # and both documents went into the table in one write: one merge_insert and one delete of stale
    # chunks, two table versions (two messages of one document each would have made four)
    assert chunks.version == version_before + 2

    # and the same message delivered again writes nothing more
    again = handler(index_event(message), idle_stack.context("IndexFunction"))
    assert again == {"batchItemFailures": []}
    chunks.checkout_latest()
    assert chunks.version == version_before + 2


def test_a_bulk_message_whose_parquet_is_gone_fails_each_member_with_the_reason(
    idle_stack: LocalStack,
) -> None:
    # given two staged documents whose bulk Parquet is deleted before index reads it
    key, batches = stage("bulk-gone", ["a", "b"])
    services.blob_store().delete(key)

    # when the index function handles their message
    response = idle_stack.handler("IndexFunction")(
        index_event(bulk_message("bulk-gone", key, batches)), idle_stack.context("IndexFunction")
    )

    # then it is acknowledged, and each document is FAILED saying which staged file is missing
    assert response == {"batchItemFailures": []}
    records = services.document_table().get_many("bulk-gone", [b.doc_id for b in batches])
    for b in batches:
        assert records[b.doc_id].status == DocumentStatus.FAILED
        assert records[b.doc_id].error == f"staged vectors {key} are missing"


def test_a_bulk_message_given_up_or_dead_lettered_fails_every_member_naming_the_queue(
    idle_stack: LocalStack,
) -> None:
    # given two staged documents whose bulk Parquet is unreadable (a fault the retries do not fix)
    key, batches = stage("bulk-dlq", ["a", "b"])
    services.blob_store().put_bytes(key, b"not parquet")
    message = bulk_message("bulk-dlq", key, batches)
    max_receives = idle_stack.plan.queues["IndexQueue"].max_receive_count
    assert max_receives is not None

    # when its last receive fails too
    response = idle_stack.handler("IndexFunction")(
        index_event(message, max_receives), idle_stack.context("IndexFunction")
    )

    # then the message is retried (into the DLQ), each member FAILED naming the index dead-letter queue
    assert response == {"batchItemFailures": [{"itemIdentifier": "bulk-1"}]}
    table = services.document_table()
    for b in batches:
        record = table.get("bulk-dlq", b.doc_id)
        assert record is not None
        assert record.status == DocumentStatus.FAILED
        assert record.dead_letter_stage == "index"
        assert record.error is not None
        assert "stratus dlq redrive --stage index" in record.error

    # and a bulk message found in the DLQ by the maintenance sweep marks its members too
    key2, batches2 = stage("bulk-sweep", ["a", "c"])
    sqs = idle_stack.client("sqs")
    dlq = sqs.create_queue(QueueName="bulk-sweep-dlq")["QueueUrl"]
    sqs.send_message(QueueUrl=dlq, MessageBody=bulk_message("bulk-sweep", key2, batches2).model_dump_json())
    report = sweep_dead_letters(sqs, table, "index", dlq)
    assert report.marked == 2
    for b in batches2:
        swept = table.get("bulk-sweep", b.doc_id)
        assert swept is not None
        assert swept.status == DocumentStatus.FAILED
        assert swept.dead_letter_stage == "index"


def test_a_bulk_message_expands_into_its_members() -> None:
    # given a bulk message of two members
    message = StageMessage(
        action="upsert_many",
        collection="c",
        doc_id="bulk-x",
        source="bulk",
        key="staging/c/_bulk/x/embeddings.parquet",
        request_id="bulk-run",
        members=[
            BatchMember(doc_id="d1", source="one.md", content_sha256="1" * 64, received_at=5.0),
            BatchMember(doc_id="d2", source="two.md", content_sha256="2" * 64),
        ],
    )

    # when it is expanded
    documents = message.documents()

    # then each member is an upsert of its own version, pointing at the shared Parquet
    assert [(d.action, d.doc_id, d.source, d.content_sha256) for d in documents] == [
        ("upsert", "d1", "one.md", "1" * 64),
        ("upsert", "d2", "two.md", "2" * 64),
    ]
    assert {d.key for d in documents} == {message.key}
    assert {d.request_id for d in documents} == {"bulk-run"}
    assert documents[0].received_at == 5.0
    # and an ordinary message stands for itself
    single = StageMessage(collection="c", doc_id="d", source="s")
    assert single.documents() == [single]
    # and a bulk message carries at most 500 members
    from pydantic import ValidationError

    members = [BatchMember(doc_id=str(i), source=str(i), content_sha256="0") for i in range(501)]
    with pytest.raises(ValidationError):
        StageMessage(action="upsert_many", collection="c", doc_id="b", source="s", members=members)
