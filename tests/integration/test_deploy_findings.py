"""Issue 20's findings that need the emulator: S3's 403 for a grant that is missing, the FIFO index queue."""

from __future__ import annotations

import json

import boto3
import pytest
from fakes.faulty_proxy import Fault, FaultyProxy

from stratus.models import StageMessage
from stratus.pipeline.index import fifo_failures
from stratus.stores.blobs import AccessDeniedError, BlobStore
from stratus.stores.dead_letters import redrive
from stratus.stores.queues import MessageQueue
from stratus_tools.local.stack import LocalStack

pytestmark = pytest.mark.integration


def _s3(endpoint: str, stack: LocalStack) -> object:
    """An S3 client of the stack's admin (the emulator enforces IAM) at `endpoint`."""
    assert stack.admin is not None
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=stack.admin.access_key_id,
        aws_secret_access_key=stack.admin.secret_access_key,
    )


# --------------------------------------------------------------------------- finding 1


def test_a_403_from_s3_is_an_access_error_with_a_reason_never_a_missing_object(
    idle_stack: LocalStack,
) -> None:
    # Given S3 answering 403 for a sidecar, as it does without s3:ListBucket for a key that does not exist
    bucket = idle_stack.plan.bucket
    with FaultyProxy(idle_stack.endpoint_url) as proxy:
        proxy.inject(
            Fault("GET", r"\.metadata\.json$", status=403, first=10),
            Fault("HEAD", r"/staging/gone$", status=403, first=10),
        )
        blobs = BlobStore(_s3(proxy.url, idle_stack), bucket)
        # When the store reads the optional sidecar and HEADs a staged object
        # Then neither reads as "missing" (None): each is an access error naming the grants to check
        with pytest.raises(AccessDeniedError) as error:
            blobs.get_bytes("inbox/docs/a.md.metadata.json")
        assert "s3:ListBucket" in str(error.value)
        assert "inbox/docs/a.md.metadata.json" in str(error.value)
        with pytest.raises(AccessDeniedError):
            blobs.head("staging/gone")
    # And a real 404 (ListBucket granted) is still "missing"
    direct = BlobStore(_s3(idle_stack.endpoint_url, idle_stack), bucket)
    assert direct.get_bytes("inbox/docs/none.md.metadata.json") is None
    assert direct.head("staging/none") is None


def test_an_access_error_is_retried_so_a_fixed_grant_and_a_redrive_resume() -> None:
    # Given the error kind / Then SQS redelivers it (a transient error), so the give-up names the stage's DLQ
    from stratus.errors import TransientError

    assert issubclass(AccessDeniedError, TransientError)


# --------------------------------------------------------------------------- finding 2


def _message(collection: str, doc: int, action: str = "upsert") -> StageMessage:
    return StageMessage(
        action=action,
        collection=collection,
        doc_id=f"{doc:032x}",
        source=f"d{doc}.md",
        content_sha256=f"{doc:064x}",
        key=f"staging/{collection}/{doc}",
    )


def test_index_messages_go_to_a_fifo_queue_grouped_by_collection(idle_stack: LocalStack) -> None:
    # Given the local stack's index queue (FIFO, from the template) and the embed stage's sender
    url = idle_stack.queue_urls["IndexQueue"]
    sqs = idle_stack.client("sqs")
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert url.endswith(".fifo")
    assert attributes["FifoQueue"] == "true"
    dlq_arn = json.loads(attributes["RedrivePolicy"])["deadLetterTargetArn"]
    assert dlq_arn.endswith(".fifo")
    queue = MessageQueue(sqs, url)
    # When two documents of collection a are sent, and the first is sent twice (a retried embed batch)
    queue.send([_message("a", 1), _message("a", 2)])
    queue.send([_message("a", 1)])
    first = sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"], VisibilityTimeout=30
    )["Messages"]
    # Then one receive holds both, in a's group, in order, the copy deduplicated
    groups = [(m["Attributes"]["MessageGroupId"], json.loads(m["Body"])["doc_id"][-1]) for m in first]
    assert groups == [("a", "1"), ("a", "2")]
    assert all(m["Attributes"]["MessageDeduplicationId"] for m in first)
    # And while a's messages are in flight (one writer per table), a new a message waits but another
    # collection's is delivered (collections index in parallel)
    queue.send([_message("a", 4), _message("b", 5)])
    second = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"])["Messages"]
    assert [m["Attributes"]["MessageGroupId"] for m in second] == ["b"]
    for m in first + second:
        sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    rest = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"])["Messages"]
    assert [m["Attributes"]["MessageGroupId"] for m in rest] == ["a"]
    sqs.delete_message(QueueUrl=url, ReceiptHandle=rest[0]["ReceiptHandle"])


def test_a_failed_index_message_stops_its_group_for_the_rest_of_the_batch() -> None:
    # Given a FIFO batch a1 a2 b1 a3 where a2 failed
    records = [
        {"messageId": mid, "attributes": {"MessageGroupId": group}}
        for mid, group in (("a1", "a"), ("a2", "a"), ("b1", "b"), ("a3", "a"))
    ]
    response = {"batchItemFailures": [{"itemIdentifier": "a2"}]}
    # When the failures are reported / Then a2 and every later a message are, and b's message is not
    assert fifo_failures({"Records": records}, response) == ["a2", "a3"]
    # And a standard queue's records (no group) report only what failed
    plain = [{"messageId": "x"}, {"messageId": "y"}]
    assert fifo_failures({"Records": plain}, {"batchItemFailures": [{"itemIdentifier": "x"}]}) == ["x"]


def test_a_redrive_into_the_fifo_queue_keeps_the_group_and_is_not_deduplicated(
    idle_stack: LocalStack,
) -> None:
    # Given a message of collection c in the index DLQ that was sent to the main queue moments ago
    sqs = idle_stack.client("sqs")
    url = idle_stack.queue_urls["IndexQueue"]
    dlq = idle_stack.queue_urls["IndexDLQ"]
    message = _message("c", 9)
    MessageQueue(sqs, url).send([message])
    received = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1)["Messages"]
    sqs.delete_message(QueueUrl=url, ReceiptHandle=received[0]["ReceiptHandle"])
    MessageQueue(sqs, dlq).send([message])
    # When it is redriven within the 5-minute deduplication window
    moved, failed = redrive(sqs, dlq, url, max_messages=1, empty_receives=1)
    # Then it arrives in the main queue, in its collection's group
    assert (moved, failed) == (1, 0)
    (back,) = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"])["Messages"]
    assert back["Attributes"]["MessageGroupId"] == "c"
    assert StageMessage.model_validate_json(back["Body"]) == message
    sqs.delete_message(QueueUrl=url, ReceiptHandle=back["ReceiptHandle"])


# --------------------------------------------------------------------------- finding 9


def _write_table(collection: str, documents: int) -> None:
    import numpy as np

    from stratus import services
    from stratus.models import Chunk, ChunkBatch
    from stratus.stores.schema import chunk_rows

    rng = np.random.default_rng(3)
    for doc in range(documents):
        doc_id = f"{doc:032x}"
        batch = ChunkBatch(
            collection=collection,
            doc_id=doc_id,
            source=f"doc{doc}.md",
            content_sha256=f"{doc:064x}",
            chunks=[
                Chunk(
                    chunk_id=f"{doc:016x}{i:016x}", position=i, text=f"document {doc} part {i}", token_count=4
                )
                for i in range(20)
            ],
        )
        vectors = rng.normal(size=(20, 16)).astype(np.float32)
        rows = chunk_rows(batch, vectors)
        services.chunk_store().write(collection, rows, {doc_id: rows.column("chunk_id").to_pylist()}, [], 16)


def test_a_table_over_the_replica_budget_is_read_from_s3_without_filling_tmp(
    idle_stack: LocalStack, tmp_path: object
) -> None:
    from pathlib import Path

    from stratus import services
    from stratus.stores.replica import ReplicaTooLarge, TableReplica
    from stratus.stores.vectors import ChunkStore

    # Given a table on S3 and a replica whose byte budget is smaller than the table
    _write_table("budget", 3)
    store = services.chunk_store()
    name = store.table_name("budget")
    root = Path(str(tmp_path)) / "replica"
    replica = TableReplica(idle_stack.client("s3"), store.uri, root, interval_s=60, max_bytes=2048)
    # When the first query asks the replica for the table
    # Then it refuses to copy (nothing is left under the replica's folder) ...
    with pytest.raises(ReplicaTooLarge):
        replica.table(name)
    assert not any(p.is_file() for p in root.rglob("*")) if root.exists() else True
    # ... and the next ask within the interval does not list S3 again
    with pytest.raises(ReplicaTooLarge):
        replica.table(name)
    # And a store that uses that replica serves the query from S3 directly, with every row
    direct = ChunkStore(store.uri, store._storage_options, read_consistency_s=0, replica=replica)
    table = direct.search_table("budget")
    assert table is not None
    assert table.count_rows() == 60
    assert str(root) not in str(table.uri)
    # And with a budget the table fits, the replica copies it as before
    roomy = TableReplica(idle_stack.client("s3"), store.uri, root, interval_s=60, max_bytes=1 << 30)
    local = roomy.table(name)
    assert local is not None
    assert local.count_rows() == 60


# --------------------------------------------------------------------------- finding 6


def test_maintenance_marks_documents_dead_lettered_without_their_stage_running_failed(
    idle_stack: LocalStack,
) -> None:
    from stratus import services
    from stratus.models import DocumentStatus

    documents = services.document_table()
    sqs = idle_stack.client("sqs")
    # Given a document left EMBEDDED whose index message reached the index DLQ without the index stage
    # ever seeing its last receive (throttled invocations), and an INDEXED one with a stale copy there
    stuck, done = _message("sweep", 21), _message("sweep", 22)
    for message, status in ((stuck, DocumentStatus.EMBEDDED), (done, DocumentStatus.INDEXED)):
        documents.record_version(
            message.collection,
            message.doc_id,
            "1",
            status,
            content_sha256=message.content_sha256,
            source=message.source,
        )
    MessageQueue(sqs, idle_stack.queue_urls["IndexDLQ"]).send([stuck, done])
    # When the scheduled maintenance function runs
    report = idle_stack.handler("MaintenanceFunction")({}, idle_stack.context("MaintenanceFunction"))
    # Then the stuck document is FAILED with a reason that names the DLQ and the redrive, and the stage
    record = documents.get("sweep", stuck.doc_id)
    assert record is not None
    assert record.status == DocumentStatus.FAILED
    assert "index dead-letter queue" in (record.error or "")
    assert "stratus dlq redrive --stage index" in (record.error or "")
    assert record.dead_letter_stage == "index"
    # And the INDEXED one is untouched, and the sweep reports what it did
    indexed = documents.get("sweep", done.doc_id)
    assert indexed is not None
    assert indexed.status == DocumentStatus.INDEXED
    (index_sweep,) = [s for s in report["dead_letters"] if s["stage"] == "index"]
    assert index_sweep == {"stage": "index", "seen": 2, "marked": 1}
    # And the messages stay in the DLQ for `stratus dlq redrive` (which resumes the FAILED document)
    depth = sqs.get_queue_attributes(
        QueueUrl=idle_stack.queue_urls["IndexDLQ"],
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    assert (
        int(depth["ApproximateNumberOfMessages"]) + int(depth["ApproximateNumberOfMessagesNotVisible"]) == 2
    )
    sqs.purge_queue(QueueUrl=idle_stack.queue_urls["IndexDLQ"])
