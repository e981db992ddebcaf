"""A long-polling SQS consumer running the embed stage outside Lambda (GPU hosts).

The GPU image (functions/embed/Dockerfile.gpu) runs `python -m stratus.pipeline.worker embed`;
`stratus worker embed` is the same worker started from the CLI.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stratus.observability import logger, metrics

BatchHandler = Callable[[dict[str, Any]], dict[str, list[dict[str, str]]]]
"""A Lambda-style SQS batch handler: an event with Records in, a partial batch response out."""


@dataclass
class WorkerStats:
    """What a worker has done so far."""

    batches: int = 0
    succeeded: int = 0
    failed: int = 0


def sqs_event(messages: list[dict[str, Any]], queue_arn: str = "") -> dict[str, Any]:
    """The Lambda SQS event for messages received with boto3's receive_message."""
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m.get("Attributes", {}),
                "messageAttributes": {
                    k: {"stringValue": v.get("StringValue"), "dataType": v.get("DataType")}
                    for k, v in m.get("MessageAttributes", {}).items()
                },
                "md5OfBody": m.get("MD5OfBody", ""),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": queue_arn.split(":")[3] if queue_arn.count(":") >= 5 else "",
            }
            for m in messages
        ]
    }


def delete_messages(sqs: Any, queue_url: str, messages: list[dict[str, Any]]) -> None:
    """Delete handled messages from their queue, ten to a call (what Lambda does after a batch)."""
    for start in range(0, len(messages), 10):
        sqs.delete_message_batch(
            QueueUrl=queue_url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                for i, m in enumerate(messages[start : start + 10])
            ],
        )


class QueueWorker:
    """Receives batches from one queue, hands each whole batch to a handler, deletes what succeeded.

    The handler is the same batch function the Lambda handler calls, so a batch is embedded in one
    encoder call here too, and a record it names as failed is left for SQS to redeliver.
    """

    def __init__(
        self,
        sqs_client: Any,
        queue_url: str,
        handle_batch: BatchHandler,
        batch_size: int = 10,
        wait_s: int = 20,
    ) -> None:
        self._sqs = sqs_client
        self._queue_url = queue_url
        self._handle_batch = handle_batch
        self._batch_size = min(10, max(1, batch_size))
        self._wait_s = wait_s
        self.stats = WorkerStats()

    def run_once(self) -> int:
        """Receive and handle one batch; return how many messages it held."""
        response = self._sqs.receive_message(
            QueueUrl=self._queue_url,
            MaxNumberOfMessages=self._batch_size,
            WaitTimeSeconds=self._wait_s,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages = response.get("Messages", [])
        if not messages:
            return 0
        try:
            result = self._handle_batch(sqs_event(messages))
            failed = {f["itemIdentifier"] for f in result.get("batchItemFailures", [])}
        except Exception:
            # Left undeleted: every message comes back after the visibility timeout, then goes to the DLQ.
            logger.exception("batch failed; SQS redelivers it", extra={"messages": len(messages)})
            failed = {m["MessageId"] for m in messages}
        done = [m for m in messages if m["MessageId"] not in failed]
        for message_id in failed:
            logger.warning("message failed; SQS redelivers it", extra={"message_id": message_id})
        self.stats.succeeded += len(done)
        self.stats.failed += len(messages) - len(done)
        delete_messages(self._sqs, self._queue_url, done)
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


def stage_worker(stage: str, wait_s: int = 20, batch_size: int = 10) -> QueueWorker:
    """A worker for the embed or index queue, wired to the process-wide settings and stores.

    An index worker is a chunk-table writer: run it only where no index function consumes the queue.
    """
    from stratus.settings import get_settings
    from stratus.stores import aws

    handle_batch: BatchHandler
    if stage == "embed":
        from stratus.pipeline.embed import run_embed_batch as handle_batch
    elif stage == "index":
        from stratus.pipeline.index import run_index_batch as handle_batch
    else:
        raise ValueError(f"no worker for stage {stage!r}")
    settings = get_settings()
    url = getattr(settings, f"{stage}_queue_url")
    if not url:
        name = stage.capitalize()
        raise SystemExit(f"STRATUS_{stage.upper()}_QUEUE_URL is not set (the stack output {name}QueueUrl)")
    # A long poll holds the connection wait_s seconds before answering: the read timeout must outlast it.
    sqs = aws.make_client("sqs", settings, read_timeout_s=wait_s + settings.aws_read_timeout_s)
    return QueueWorker(sqs, url, handle_batch, batch_size=batch_size, wait_s=wait_s)


def embed_worker(wait_s: int = 20, batch_size: int = 10) -> QueueWorker:
    """A worker for the embed queue, wired to the process-wide settings and stores."""
    return stage_worker("embed", wait_s, batch_size)


def run_until_stopped(worker: QueueWorker, max_batches: int | None = None) -> WorkerStats:
    """Run `worker` until SIGINT or SIGTERM (or `max_batches` batches); return what it did."""
    import signal

    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    return worker.run(stop, max_batches=max_batches)


def main(argv: list[str] | None = None) -> int:
    """`python -m stratus.pipeline.worker embed`: the GPU image's entry point."""
    import argparse

    from stratus.embedding.encoder import get_encoder

    parser = argparse.ArgumentParser(prog="python -m stratus.pipeline.worker", description=__doc__)
    parser.add_argument("stage", choices=["embed"])
    parser.add_argument("--wait", type=int, default=20, help="SQS long-poll seconds")
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--max-batches", type=int, default=None, help="stop after this many batches")
    args = parser.parse_args(argv)
    worker = stage_worker(args.stage, wait_s=args.wait, batch_size=args.batch_size)
    logger.info("worker started", extra={"stage": args.stage, "providers": get_encoder().providers})
    stats = run_until_stopped(worker, args.max_batches)
    logger.info("worker stopped", extra={"stage": args.stage, **dataclasses.asdict(stats)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
