"""SQS sending behind a small class: stage pointers (claim checks) to the next stage."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from stratus.errors import TransientError
from stratus.models import StageMessage


class MessageQueue:
    """Sends StageMessages to one queue."""

    def __init__(self, sqs_client: Any, queue_url: str) -> None:
        self._sqs = sqs_client
        self.queue_url = queue_url

    def send(self, messages: Sequence[StageMessage]) -> None:
        """Send messages in batches of ten; raise TransientError if any could not be sent."""
        for start in range(0, len(messages), 10):
            batch = messages[start : start + 10]
            entries = [
                {
                    "Id": str(i),
                    "MessageBody": message.model_dump_json(),
                    "MessageAttributes": {
                        "request_id": {"DataType": "String", "StringValue": message.request_id}
                    }
                    if message.request_id
                    else {},
                }
                for i, message in enumerate(batch)
            ]
            response = self._sqs.send_message_batch(QueueUrl=self.queue_url, Entries=entries)
            if response.get("Failed"):
                raise TransientError(f"SQS send failed for {len(response['Failed'])} message(s)")
