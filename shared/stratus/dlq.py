"""`stratus dlq list|redrive`: inspect dead-letter queues and replay their messages after a fix.

Each stage queue names its DLQ in its RedrivePolicy, so only the stage queues' URLs are
configured (STRATUS_FETCH_QUEUE_URL, ...). Redrive receives from the DLQ, sends each message
to its stage queue with the same body and message attributes, and deletes it from the DLQ only
once the send succeeded: a crash in between duplicates a message (which the stages tolerate),
never loses one. SQS's StartMessageMoveTask would do the same, but emulators lack it.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from typing import Any

from stratus.stores.queues import is_fifo, send_batches

STAGES = ("fetch", "embed", "index")
# Fields of a received message attribute that send_message accepts.
_ATTRIBUTE_FIELDS = ("DataType", "StringValue", "BinaryValue")


@dataclass
class DlqReport:
    """What list or redrive found or did for one stage."""

    stage: str
    queue_url: str
    dlq_url: str
    messages: int = 0
    moved: int = 0
    failed: int = 0
    samples: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """Plain values for --json."""
        return {
            "stage": self.stage,
            "queue_url": self.queue_url,
            "dlq_url": self.dlq_url,
            "messages": self.messages,
            "moved": self.moved,
            "failed": self.failed,
            "samples": self.samples,
        }


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


def stage_queue_urls(stages: list[str]) -> dict[str, str]:
    """The configured URL of each stage's queue."""
    from stratus.settings import get_settings

    settings = get_settings()
    urls = {}
    for stage in stages:
        url = getattr(settings, f"{stage}_queue_url")
        if not url:
            raise SystemExit(f"STRATUS_{stage.upper()}_QUEUE_URL is not set (is the stack running?)")
        urls[stage] = url
    return urls


def list_dlqs(sqs: Any, stages: list[str], samples: int) -> list[DlqReport]:
    """Count and sample every stage's DLQ."""
    reports = []
    for stage, url in stage_queue_urls(stages).items():
        dlq = dead_letter_queue_url(sqs, url)
        report = DlqReport(stage, url, dlq, messages=queue_depth(sqs, dlq))
        report.samples = peek(sqs, dlq, samples) if report.messages else []
        reports.append(report)
    return reports


def redrive_dlqs(sqs: Any, stages: list[str], max_messages: int | None) -> list[DlqReport]:
    """Redrive every named stage's DLQ into its queue; `max_messages` caps each stage."""
    reports = []
    for stage, url in stage_queue_urls(stages).items():
        dlq = dead_letter_queue_url(sqs, url)
        report = DlqReport(stage, url, dlq, messages=queue_depth(sqs, dlq))
        if report.messages:
            report.moved, report.failed = redrive(sqs, dlq, url, max_messages)
        reports.append(report)
    return reports


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stratus dlq", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)
    for name, text in (("list", "count and sample each DLQ"), ("redrive", "move DLQ messages back")):
        command = sub.add_parser(name, help=text)
        command.add_argument("--stage", choices=[*STAGES, "all"], default="all")
        command.add_argument("--json", action="store_true", help="print JSON")
        if name == "list":
            command.add_argument("--samples", type=int, default=3, help="bodies shown per DLQ (max 10)")
        else:
            command.add_argument("--max", type=int, default=None, help="messages moved per stage at most")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `stratus dlq`."""
    args = _parser().parse_args(argv)
    from stratus.stores import aws

    sqs = aws.client("sqs")
    stages = list(STAGES) if args.stage == "all" else [args.stage]
    if args.action == "list":
        reports = list_dlqs(sqs, stages, args.samples)
    else:
        from stratus.audit import cli_actor, record

        try:
            reports = redrive_dlqs(sqs, stages, args.max)
        except Exception as error:
            record(
                cli_actor(),
                "dlq.redrive",
                ",".join(stages),
                "failed",
                detail=f"{type(error).__name__}: {error}",
            )
            raise
        failed = sum(r.failed for r in reports)
        summary = "; ".join(
            f"{r.stage}: {r.messages} in DLQ, {r.moved} moved, {r.failed} failed" for r in reports
        )
        record(
            cli_actor(), "dlq.redrive", ",".join(stages), "failed" if failed else "success", detail=summary
        )
    if args.json:
        print(json.dumps([r.to_json() for r in reports], indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    from stratus.display import line

    console = Console(highlight=False)
    table = Table(title="Dead-letter queues" if args.action == "list" else "Redrive")
    for column in ("stage", "messages", *(("moved", "failed") if args.action == "redrive" else ())):
        table.add_column(column)
    for r in reports:
        extra = (str(r.moved), str(r.failed)) if args.action == "redrive" else ()
        table.add_row(r.stage, str(r.messages), *extra)
    console.print(table)
    for r in reports:
        for body in r.samples:
            console.print(line((r.stage, "bold"), " ", body[:300]))
    return 1 if any(r.failed for r in reports) else 0
