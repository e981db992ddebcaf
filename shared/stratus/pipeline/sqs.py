"""Turning Lambda SQS events into typed stage messages and partial-batch responses."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from stratus.models import StageMessage
from stratus.observability import logger


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
