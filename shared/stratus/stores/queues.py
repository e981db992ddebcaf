"""SQS sending behind a small class: stage messages (small outputs inline, or claim checks)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from stratus.errors import TransientError
from stratus.models import StageMessage

# SendMessageBatch takes at most ten entries whose bodies and attributes add up to 256 KiB.
BATCH_MAX_ENTRIES = 10
BATCH_MAX_BYTES = 256 * 1024


def _entry_bytes(entry: Mapping[str, Any]) -> int:
    size = len(str(entry["MessageBody"]).encode())
    for name, value in entry.get("MessageAttributes", {}).items():
        size += len(name.encode()) + len(str(value.get("DataType", "")).encode())
        size += len(str(value.get("StringValue", "")).encode())
    return size


def send_batches(entries: Sequence[Mapping[str, Any]]) -> Iterator[list[Mapping[str, Any]]]:
    """The entries in order, grouped so that each group fits one SendMessageBatch."""
    group: list[Mapping[str, Any]] = []
    size = 0
    for entry in entries:
        entry_size = _entry_bytes(entry)
        if group and (len(group) == BATCH_MAX_ENTRIES or size + entry_size > BATCH_MAX_BYTES):
            yield group
            group, size = [], 0
        group.append(entry)
        size += entry_size
    if group:
        yield group


def is_fifo(queue_url: str) -> bool:
    """Whether the queue is a FIFO queue (SQS requires FIFO queue names to end in .fifo)."""
    return queue_url.rstrip("/").endswith(".fifo")


def group_id(message: StageMessage) -> str:
    """The FIFO message group of a stage message: its collection (one writer per chunk table)."""
    return message.collection


def deduplication_id(message: StageMessage) -> str:
    """A FIFO deduplication id: the same hand-over of the same document version sent twice is one message.

    SQS drops a copy sent within 5 minutes of the first (an embed batch retried after its send).
    """
    parts = (message.action, message.collection, message.doc_id, message.content_sha256, message.key)
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


class MessageQueue:
    """Sends StageMessages to one queue; to a FIFO queue grouped by collection, with deduplication ids."""

    def __init__(self, sqs_client: Any, queue_url: str) -> None:
        self._sqs = sqs_client
        self.queue_url = queue_url
        self.fifo = is_fifo(queue_url)

    def send(self, messages: Sequence[StageMessage]) -> None:
        """Send messages in as few batches as fit; raise TransientError if any could not be sent."""
        entries: list[dict[str, Any]] = []
        for i, message in enumerate(messages):
            entry: dict[str, Any] = {
                "Id": str(i),
                "MessageBody": message.model_dump_json(),
                "MessageAttributes": {"request_id": {"DataType": "String", "StringValue": message.request_id}}
                if message.request_id
                else {},
            }
            if self.fifo:
                entry["MessageGroupId"] = group_id(message)
                entry["MessageDeduplicationId"] = deduplication_id(message)
            entries.append(entry)
        for batch in send_batches(entries):
            response = self._sqs.send_message_batch(QueueUrl=self.queue_url, Entries=batch)
            if response.get("Failed"):
                raise TransientError(f"SQS send failed for {len(response['Failed'])} message(s)")
