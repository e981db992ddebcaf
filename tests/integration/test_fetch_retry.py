"""A fetch retried after its hand-over to embed failed hands the document over again."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from stratus import services
from stratus.errors import TransientError
from stratus.models import DocumentStatus, StageMessage, make_doc_id
from stratus.pipeline.fetch import FetchConfig, FetchStage, ObjectEvent
from stratus.settings import get_settings
from stratus_tools.local.stack import LocalStack

pytestmark = pytest.mark.integration


@dataclass
class FlakyQueue:
    """An embed queue whose first `failures` sends fail (SQS unavailable), then accepts."""

    failures: int
    sent: list[StageMessage] = field(default_factory=list)

    def send(self, messages: list[StageMessage]) -> None:
        if self.failures:
            self.failures -= 1
            raise TransientError("SQS send failed for 1 message(s)")
        self.sent.extend(messages)


def fetch_stage(embed_queue: FlakyQueue) -> FetchStage:
    return FetchStage(
        blobs=services.blob_store(),
        documents=services.document_table(),
        embed_queue=embed_queue,  # type: ignore[arg-type]
        index_queue=services.queue("index"),
        tokenizer=services.chunk_tokenizer,
        config=FetchConfig.from_settings(get_settings()),
    )


def test_a_fetch_retried_after_the_hand_over_failed_hands_the_document_over(idle_stack: LocalStack) -> None:
    # given an uploaded document and an embed queue that refuses the first send
    key = "inbox/retry/guide.md"
    idle_stack.client("s3").put_object(
        Bucket=idle_stack.plan.bucket, Key=key, Body=b"# Guide\n\nRun make test before every stop.\n"
    )
    queue = FlakyQueue(failures=1)
    stage = fetch_stage(queue)
    event = ObjectEvent("created", key, "0" * 39 + "1")

    # when the first attempt fails after recording the document, and SQS delivers the event again
    with pytest.raises(TransientError):
        stage.handle_event(event)
    first = services.document_table().get("retry", make_doc_id("retry", "guide.md"))
    stage.handle_event(event)

    # then the retry handed the document to embed (it is not skipped as an unchanged re-upload)
    assert first is not None
    assert first.status == DocumentStatus.FETCHED
    (message,) = queue.sent
    assert message.doc_id == first.doc_id
    assert message.content_sha256 == first.content_sha256
    record = services.document_table().get("retry", first.doc_id)
    assert record is not None
    assert record.status == DocumentStatus.FETCHED
    assert record.chunk_count >= 1
