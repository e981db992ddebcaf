"""SQS sending behind a small class: stage messages (small outputs inline, or claim checks)."""

from __future__ import annotations

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


class MessageQueue:
    """Sends StageMessages to one queue."""

    def __init__(self, sqs_client: Any, queue_url: str) -> None:
        self._sqs = sqs_client
        self.queue_url = queue_url

    def send(self, messages: Sequence[StageMessage]) -> None:
        """Send messages in as few batches as fit; raise TransientError if any could not be sent."""
        entries = [
            {
                "Id": str(i),
                "MessageBody": message.model_dump_json(),
                "MessageAttributes": {"request_id": {"DataType": "String", "StringValue": message.request_id}}
                if message.request_id
                else {},
            }
            for i, message in enumerate(messages)
        ]
        for batch in send_batches(entries):
            response = self._sqs.send_message_batch(QueueUrl=self.queue_url, Entries=batch)
            if response.get("Failed"):
                raise TransientError(f"SQS send failed for {len(response['Failed'])} message(s)")
