"""Dead-letter queues: find a queue's DLQ, count and peek at it, and replay its messages after a fix.

Each stage queue names its DLQ in its RedrivePolicy, so only the stage queues' URLs are
configured (STRATUS_FETCH_QUEUE_URL, ...). Redrive receives from the DLQ, sends each message
to its stage queue with the same body and message attributes, and deletes it from the DLQ only
once the send succeeded: a crash in between duplicates a message (which the stages tolerate),
never loses one. SQS's StartMessageMoveTask would do the same, but emulators lack it.
"""

from __future__ import annotations

import json
from typing import Any

from stratus.stores.queues import is_fifo, send_batches

# Fields of a received message attribute that send_message accepts.
_ATTRIBUTE_FIELDS = ("DataType", "StringValue", "BinaryValue")


def dead_letter_queue_url(sqs: Any, queue_url: str) -> str:
    """The URL of the DLQ a queue's RedrivePolicy names."""
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["RedrivePolicy"])["Attributes"]
    if "RedrivePolicy" not in attributes:
        raise ValueError(f"{queue_url} has no dead-letter queue")
    arn = json.loads(attributes["RedrivePolicy"])["deadLetterTargetArn"]
    _, _, _, _, account, name = arn.split(":", 5)
    url: str = sqs.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"]
    return url


def queue_depth(sqs: Any, queue_url: str) -> int:
    """Visible plus in-flight messages of a queue."""
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes.get("ApproximateNumberOfMessages", 0)) + int(
        attributes.get("ApproximateNumberOfMessagesNotVisible", 0)
    )


def peek(sqs: Any, queue_url: str, limit: int) -> list[str]:
    """Up to `limit` (at most 10) message bodies, left visible for the next reader."""
    if limit <= 0:
        return []
    response = sqs.receive_message(
        QueueUrl=queue_url, MaxNumberOfMessages=min(10, limit), VisibilityTimeout=0, WaitTimeSeconds=0
    )
    return [m["Body"] for m in response.get("Messages", [])]


def _send_attributes(message: dict[str, Any]) -> dict[str, Any]:
    return {
        name: {k: v for k, v in value.items() if k in _ATTRIBUTE_FIELDS}
        for name, value in message.get("MessageAttributes", {}).items()
    }


def redrive(
    sqs: Any,
    dlq_url: str,
    queue_url: str,
    max_messages: int | None = None,
    visibility_timeout_s: int = 60,
    empty_receives: int = 2,
) -> tuple[int, int]:
    """Move messages from `dlq_url` back to `queue_url`; (moved, failed to send).

    Stops after `max_messages`, or after `empty_receives` receives in a row return nothing.
    A message that could not be sent stays in the DLQ (visible again after the visibility timeout).
    """
    moved = failed = empties = 0
    while max_messages is None or moved + failed < max_messages:
        wanted = 10 if max_messages is None else min(10, max_messages - moved - failed)
        response = sqs.receive_message(
            QueueUrl=dlq_url,
            MaxNumberOfMessages=wanted,
            VisibilityTimeout=visibility_timeout_s,
            WaitTimeSeconds=1,
            MessageAttributeNames=["All"],
            AttributeNames=["MessageGroupId"],
        )
        messages = response.get("Messages", [])
        if not messages:
            empties += 1
            if empties >= empty_receives:
                break
            continue
        empties = 0
        entries = []
        for i, message in enumerate(messages):
            entry: dict[str, Any] = {"Id": str(i), "MessageBody": message["Body"]}
            attributes = _send_attributes(message)
            if attributes:
                entry["MessageAttributes"] = attributes
            if is_fifo(queue_url):
                # Same group as before; a fresh deduplication id, or SQS drops a redrive within 5 minutes.
                entry["MessageGroupId"] = message.get("Attributes", {}).get("MessageGroupId", "redrive")
                entry["MessageDeduplicationId"] = f"redrive-{message['MessageId']}"
            entries.append(entry)
        sent: set[str] = set()
        for batch in send_batches(entries):
            result = sqs.send_message_batch(QueueUrl=queue_url, Entries=batch)
            sent.update(entry["Id"] for entry in result.get("Successful", []))
        failed += len(messages) - len(sent)
        done = [(i, m) for i, m in enumerate(messages) if str(i) in sent]
        if done:
            sqs.delete_message_batch(
                QueueUrl=dlq_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in done],
            )
        moved += len(done)
    return moved, failed
