"""`stratus worker embed`: a long-polling SQS consumer running the embed stage outside Lambda (GPU hosts)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stratus.observability import logger, metrics


@dataclass
class WorkerStats:
    """What a worker has done so far."""

    batches: int = 0
    succeeded: int = 0
    failed: int = 0


class QueueWorker:
    """Receives batches from one queue, handles each message, deletes the ones that succeeded."""

    def __init__(
        self,
        sqs_client: Any,
        queue_url: str,
        handle: Callable[[str], None],
        batch_size: int = 10,
        wait_s: int = 20,
    ) -> None:
        self._sqs = sqs_client
        self._queue_url = queue_url
        self._handle = handle
        self._batch_size = min(10, max(1, batch_size))
        self._wait_s = wait_s
        self.stats = WorkerStats()

    def run_once(self) -> int:
        """Receive and handle one batch; return how many messages it held."""
        response = self._sqs.receive_message(
            QueueUrl=self._queue_url,
            MaxNumberOfMessages=self._batch_size,
            WaitTimeSeconds=self._wait_s,
            MessageAttributeNames=["All"],
        )
        messages = response.get("Messages", [])
        if not messages:
            return 0
        done = []
        for message in messages:
            try:
                self._handle(message["Body"])
                done.append(message)
                self.stats.succeeded += 1
            except Exception:
                # Left undeleted: it comes back after the visibility timeout, then goes to the DLQ.
                logger.exception(
                    "message failed; SQS redelivers it", extra={"message_id": message["MessageId"]}
                )
                self.stats.failed += 1
        if done:
            self._sqs.delete_message_batch(
                QueueUrl=self._queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)],
            )
        self.stats.batches += 1
        metrics.flush_metrics()
        return len(messages)

    def run(self, stop: threading.Event, max_batches: int | None = None) -> WorkerStats:
        """Work until `stop` is set (or `max_batches` batches were handled)."""
        while not stop.is_set() and (max_batches is None or self.stats.batches < max_batches):
            try:
                self.run_once()
            except Exception:
                logger.exception("receive failed; backing off")
                time.sleep(2)
        return self.stats


def embed_worker(wait_s: int = 20, batch_size: int = 10) -> QueueWorker:
    """A worker for the embed queue, wired to the process-wide settings and stores."""
    from stratus.pipeline.embed import run_embed_message
    from stratus.settings import get_settings
    from stratus.stores import aws

    url = get_settings().embed_queue_url
    if not url:
        raise SystemExit("STRATUS_EMBED_QUEUE_URL is not set (the stack output EmbedQueueUrl)")
    return QueueWorker(aws.client("sqs"), url, run_embed_message, batch_size=batch_size, wait_s=wait_s)
