"""Turning Lambda SQS events into typed stage messages and partial-batch responses."""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import ValidationError

from stratus.lifecycle import DocumentLifecycle
from stratus.models import StageMessage
from stratus.observability import MetricName, emit_metric, log_context, logger

if TYPE_CHECKING:
    from stratus.stores.documents import DocumentRecord, DocumentTable

_T = TypeVar("_T")
_R = TypeVar("_R")
_Report = TypeVar("_Report", bound="BatchFailures")


def parse_stage_records(event: dict[str, Any]) -> tuple[list[tuple[str, StageMessage]], list[str]]:
    """(message id, message) of each well-formed record, and the ids of malformed ones."""
    parsed: list[tuple[str, StageMessage]] = []
    malformed: list[str] = []
    for record in event.get("Records", []):
        try:
            parsed.append((record["messageId"], StageMessage.model_validate_json(record["body"])))
        except (ValidationError, KeyError, ValueError):
            logger.error("malformed stage message", extra={"message_id": record.get("messageId")})
            malformed.append(record.get("messageId", ""))
    return parsed, malformed


def receive_count(record: Mapping[str, Any]) -> int:
    """How many times SQS has delivered this record (`attributes.ApproximateReceiveCount`), 1 if unknown."""
    try:
        return max(1, int(record.get("attributes", {}).get("ApproximateReceiveCount", 1)))
    except (TypeError, ValueError):
        return 1


def receive_counts(event: Mapping[str, Any]) -> dict[str, int]:
    """The receive count of every record of a Lambda SQS event, by message id."""
    return {r.get("messageId", ""): receive_count(r) for r in event.get("Records", [])}


def give_up_reason(stage: str, attempts: int, error: str) -> str:
    """The FAILED reason of a document whose `stage` message goes to the dead-letter queue."""
    error = " ".join(error.split())[:300] or "unknown error"
    return (
        f"{stage}: gave up after {attempts} attempts ({error}); the message is in the {stage} "
        f"dead-letter queue — fix the cause and run `stratus dlq redrive --stage {stage}`"
    )


def give_up_on_last_attempts(
    documents: DocumentTable,
    stage: str,
    messages: Sequence[tuple[str, StageMessage]],
    failed: Sequence[str],
    errors: Mapping[str, str],
    attempts: Mapping[str, int],
    max_receive_count: int,
) -> int:
    """Mark FAILED the documents of failed messages on their last receive; how many were marked.

    The messages stay reported as failed, so SQS moves them to the dead-letter queue; the record
    names the stage, which lets a redriven message of that stage resume the document.
    """
    failing = set(failed)
    marked = 0
    for message_id, message in messages:
        count = attempts.get(message_id, 1)
        if message_id not in failing or count < max_receive_count or message.action != "upsert":
            continue
        reason = give_up_reason(stage, count, errors.get(message_id, "unknown error"))
        try:
            done = DocumentLifecycle(documents).given_up(message, stage, reason)
        except Exception:
            logger.exception("could not mark the document FAILED", extra={"doc_id": message.doc_id})
            continue
        if done:
            marked += 1
            logger.warning("gave up on the document", extra={"doc_id": message.doc_id, "reason": reason})
            emit_metric(MetricName.DOCUMENTS_FAILED, 1)
    return marked


def batch_response(failed_ids: list[str]) -> dict[str, list[dict[str, str]]]:
    """The partial batch response Lambda expects with ReportBatchItemFailures."""
    return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in failed_ids]}


def in_log_context(message: StageMessage, function: Callable[..., _R], *args: Any) -> _R:
    """Call `function` with the message's request id and doc id on every log line it writes."""
    with log_context(request_id=message.request_id, doc_id=message.doc_id):
        return function(*args)


def map_concurrently(function: Callable[[_T], _R], items: Sequence[_T], workers: int = 8) -> list[Future[_R]]:
    """Run `function` over items in a small thread pool; one future per item, in order.

    For the per-document round trips of a batch (DynamoDB, S3): they overlap instead of queueing.
    """
    if len(items) <= 1:
        futures: list[Future[_R]] = []
        for item in items:
            future: Future[_R] = Future()
            try:
                future.set_result(function(item))
            except Exception as error:
                future.set_exception(error)
            futures.append(future)
        return futures
    with ThreadPoolExecutor(max_workers=min(workers, len(items)), thread_name_prefix="stage-io") as pool:
        # copy_context: the caller's context (the local stack's per-function credentials) reaches the pool.
        return [pool.submit(contextvars.copy_context().run, function, item) for item in items]


@dataclass
class BatchFailures:
    """The messages of a batch to report for retry, and why each failed."""

    failed: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)

    def fail(self, message_ids: Sequence[str], error: str) -> None:
        """Report messages for retry, with why."""
        self.failed.extend(message_ids)
        for message_id in message_ids:
            self.errors[message_id] = error


def read_records(
    documents: DocumentTable, messages: Iterable[StageMessage]
) -> dict[tuple[str, str], DocumentRecord]:
    """The records of the messages' documents by (collection, doc id): one batch read a collection."""
    wanted: dict[str, list[str]] = {}
    for message in messages:
        wanted.setdefault(message.collection, []).append(message.doc_id)
    return {
        (collection, doc_id): record
        for collection, doc_ids in wanted.items()
        for doc_id, record in documents.get_many(collection, doc_ids).items()
    }


def run_stage_batch(
    event: Mapping[str, Any],
    stage: str,
    handle_batch: Callable[[list[tuple[str, StageMessage]]], _Report],
    max_receive_count: int,
) -> tuple[int, _Report, dict[str, list[dict[str, str]]]]:
    """Parse a stage's SQS batch, handle it, give up on last attempts: (messages, report, response)."""
    from stratus import services

    messages, malformed = parse_stage_records(dict(event))
    report = handle_batch(messages)
    if report.failed:
        give_up_on_last_attempts(
            services.document_table(),
            stage,
            messages,
            report.failed,
            report.errors,
            receive_counts(dict(event)),
            max_receive_count,
        )
    return len(messages), report, batch_response(malformed + report.failed)


class RecordBudget:
    """Per-record deadlines from a Lambda context's remaining time (the fetch stage's batches).

    A record gets an equal share of what is left (less the reserve) among the records not yet
    started, capped at `record_budget_s`: time a fast record leaves unused goes to the later ones,
    and no record can use up the time of those after it.
    """

    def __init__(self, context: Any, record_budget_s: float, reserve_s: float, min_record_s: float) -> None:
        self._context = context
        self._record_budget_s = record_budget_s
        self._reserve_s = reserve_s
        self._min_record_s = min_record_s
        self.skipped = 0

    def remaining_s(self) -> float:
        """Seconds left before the function's timeout (unbounded without a context)."""
        if self._context is None or not hasattr(self._context, "get_remaining_time_in_millis"):
            return float("inf")
        return float(self._context.get_remaining_time_in_millis()) / 1000

    def next_deadline(self, records_left: int = 1) -> float | None:
        """The time.monotonic() deadline of the next record, or None (counted) when time is short."""
        import time

        share = (self.remaining_s() - self._reserve_s) / max(1, records_left)
        available = min(self._record_budget_s, share)
        if available < self._min_record_s:
            self.skipped += 1
            return None
        return time.monotonic() + available
