"""Maintenance: compact tables, refresh full-text indexes, prune versions, add ANN indexes.

It also sweeps the embed and index dead-letter queues: a message can reach a DLQ without the stage's
code ever seeing its last receive (throttled invocations, a crash, a timeout), which leaves the
document EMBEDDED or FETCHED for ever. The sweep marks such documents FAILED with the reason, so the
documents API and `stratus status` show them; `stratus dlq redrive` resumes them as for any give-up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from stratus.lifecycle import DocumentLifecycle
from stratus.models import StageMessage
from stratus.observability import MetricName, emit_metric, logger

if TYPE_CHECKING:
    from stratus.stores.documents import DocumentTable
    from stratus.stores.vectors import ChunkStore

# Stages whose messages are StageMessages (the fetch DLQ holds S3 notifications, handled by fetch itself).
SWEPT_STAGES = ("embed", "index")


def run_maintenance(
    store: ChunkStore, vector_index_min_rows: int, keep_versions_s: float
) -> list[dict[str, Any]]:
    """Maintain every collection; one collection's failure does not stop the others."""
    reports = []
    for collection in store.collections():
        try:
            reports.append(store.maintain(collection, vector_index_min_rows, keep_versions_s))
        except Exception as error:
            logger.exception("maintenance failed", extra={"collection": collection})
            reports.append({"collection": collection, "error": type(error).__name__})
    emit_metric(MetricName.MAINTENANCE_RUNS, 1)
    return reports


@dataclass
class SweepReport:
    """What one DLQ sweep saw: messages read, documents marked FAILED."""

    stage: str
    seen: int = 0
    marked: int = 0

    def to_json(self) -> dict[str, Any]:
        """The report as a plain dict."""
        return {"stage": self.stage, "seen": self.seen, "marked": self.marked}


def dead_letter_reason(stage: str, receives: int) -> str:
    """The FAILED reason of a document whose message was dead-lettered without the stage recording why."""
    return (
        f"{stage}: the message reached the {stage} dead-letter queue after {receives} receive(s) without "
        f"the {stage} stage recording a failure (throttled, timed out or crashed invocations); fix the "
        f"cause and run `stratus dlq redrive --stage {stage}`"
    )


def sweep_dead_letters(
    sqs: Any, documents: DocumentTable, stage: str, dlq_url: str, max_messages: int = 100
) -> SweepReport:
    """Mark FAILED the documents of up to `max_messages` messages of one stage's DLQ; messages stay there.

    Each receive hides what it read for a minute, so one sweep reads distinct messages; a document
    already FAILED, INDEXED, DELETED or at another version is left alone (the update is conditional).
    On a FIFO DLQ (index) SQS hands out a message group's next messages only once the earlier ones
    are gone, so a sweep sees the first 10 of each collection's dead letters; with the index event
    source capped (no throttling), only timed-out or crashed batches (at most 10 messages) get there.
    """
    report = SweepReport(stage)
    lifecycle = DocumentLifecycle(documents)
    while report.seen < max_messages:
        response = sqs.receive_message(
            QueueUrl=dlq_url,
            MaxNumberOfMessages=min(10, max_messages - report.seen),
            VisibilityTimeout=60,
            WaitTimeSeconds=0,
            AttributeNames=["ApproximateReceiveCount"],
        )
        messages = response.get("Messages", [])
        if not messages:
            break
        report.seen += len(messages)
        for raw in messages:
            try:
                message = StageMessage.model_validate_json(raw["Body"])
            except (ValidationError, ValueError):
                continue
            if message.action == "delete":
                continue
            receives = int(raw.get("Attributes", {}).get("ApproximateReceiveCount", 0) or 0)
            for document in message.documents():  # (a bulk index message: each of its members)
                if lifecycle.given_up(document, stage, dead_letter_reason(stage, receives)):
                    report.marked += 1
                    logger.warning(
                        "dead-lettered document marked FAILED",
                        extra={"doc_id": document.doc_id, "stage": stage},
                    )
    if report.marked:
        emit_metric(MetricName.DOCUMENTS_FAILED, report.marked)
    return report


def sweep_all_dead_letters(
    sqs: Any, documents: DocumentTable, queue_urls: dict[str, str]
) -> list[SweepReport]:
    """Sweep the DLQ of every stage in SWEPT_STAGES whose queue URL is given; a failing one is logged."""
    from stratus.stores.dead_letters import dead_letter_queue_url

    reports = []
    for stage in SWEPT_STAGES:
        url = queue_urls.get(stage)
        if not url:
            continue
        try:
            reports.append(sweep_dead_letters(sqs, documents, stage, dead_letter_queue_url(sqs, url)))
        except Exception:
            logger.exception("dead-letter sweep failed", extra={"stage": stage})
    return reports
