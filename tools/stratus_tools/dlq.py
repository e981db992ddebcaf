"""`stratus dlq list|redrive`: inspect dead-letter queues and replay their messages after a fix.

The queue operations are stratus.stores.dead_letters (the console's operations view uses them too).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from typing import Any

from stratus.stores.dead_letters import dead_letter_queue_url, peek, queue_depth, redrive

STAGES = ("fetch", "embed", "index")


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
        from stratus import services
        from stratus.access.audit import cli_actor

        try:
            reports = redrive_dlqs(sqs, stages, args.max)
        except Exception as error:
            services.audit_log().record(
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
        services.audit_log().record(
            cli_actor(), "dlq.redrive", ",".join(stages), "failed" if failed else "success", detail=summary
        )
    if args.json:
        print(json.dumps([r.to_json() for r in reports], indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    from stratus_tools.display import line

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
