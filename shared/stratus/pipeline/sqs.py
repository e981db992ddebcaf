"""Turning Lambda SQS events into typed stage messages and partial-batch responses."""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import ValidationError

from stratus.models import StageMessage
from stratus.observability import log_context, logger

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


@dataclass(frozen=True)
class LastReceive:
    """A failed message on its last receive: SQS moves it to the dead-letter queue next."""

    message: StageMessage
    attempts: int
    error: str


def last_receives(
    messages: Sequence[tuple[str, StageMessage]],
    failed: Sequence[str],
    errors: Mapping[str, str],
    attempts: Mapping[str, int],
    max_receive_count: int,
) -> list[LastReceive]:
    """The failed messages that SQS delivered `max_receive_count` times: none of them comes back."""
    failing = set(failed)
    return [
        LastReceive(message, attempts.get(message_id, 1), errors.get(message_id, "unknown error"))
        for message_id, message in messages
        if message_id in failing and attempts.get(message_id, 1) >= max_receive_count
    ]


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
        """Report messages for retry, with why (each once: a bulk message stands for many documents)."""
        self.failed.extend(m for m in dict.fromkeys(message_ids) if m not in self.errors)
        for message_id in message_ids:
            self.errors[message_id] = error


def run_stage_batch(
    event: Mapping[str, Any],
    handle_batch: Callable[[list[tuple[str, StageMessage]]], _Report],
    max_receive_count: int,
    on_last_receive: Callable[[LastReceive], object],
) -> tuple[int, _Report, dict[str, list[dict[str, str]]]]:
    """Parse a stage's SQS batch and handle it: (messages, report, response).

    The failed messages on their last receive are handed to `on_last_receive` (still reported as
    failed, so SQS dead-letters them); one that raises is logged and does not stop the others.
    """
    messages, malformed = parse_stage_records(dict(event))
    report = handle_batch(messages)
    if report.failed:
        counts = receive_counts(dict(event))
        for receive in last_receives(messages, report.failed, report.errors, counts, max_receive_count):
            try:
                on_last_receive(receive)
            except Exception:
                logger.exception("last receive not handled", extra={"doc_id": receive.message.doc_id})
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
