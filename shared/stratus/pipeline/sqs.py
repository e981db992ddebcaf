"""Turning Lambda SQS events into typed stage messages and partial-batch responses."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from pydantic import ValidationError

from stratus.models import StageMessage
from stratus.observability import log_context, logger

_T = TypeVar("_T")
_R = TypeVar("_R")


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
        return [pool.submit(function, item) for item in items]
