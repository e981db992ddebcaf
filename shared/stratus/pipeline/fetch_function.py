"""What the fetch function runs: its SQS batches and the sources schedule's tick.

A fetch-queue record is an S3 notification (a document to fetch: stratus.pipeline.fetch) or a unit
of a source sync (stratus.sources.sync), each handled within its share of the invocation's time.
The sync engine drives the fetch stage, so both are wired here, above them: neither imports the other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stratus.errors import PermanentError, TransientError
from stratus.observability import log_context, logger
from stratus.pipeline.fetch import build_fetch_stage, parse_s3_notification

if TYPE_CHECKING:
    from stratus.sources.sync import SyncEngine

# Below this much time left for a record, fetch stops taking records and reports the rest for retry.
MIN_RECORD_S = 1.0


def run_fetch_message(
    body: str, message_id: str | None = None, receive_count: int = 1, deadline: float | None = None
) -> None:
    """Handle one fetch-queue message (an S3 notification); raise to have it retried.

    On the queue's last receive (`receive_count` >= STRATUS_FETCH_MAX_RECEIVE_COUNT) a failing
    event's documents are marked FAILED first; the message still goes to the dead-letter queue.
    `deadline` (time.monotonic()) is the record's time budget (see `handle_fetch_batch`).
    """
    from stratus.settings import get_settings
    from stratus.sources import is_sync_message

    if is_sync_message(body):
        # A unit of a source sync (a URL, a sitemap, an S3 listing page): the crawl frontier.
        build_engine().handle(body, deadline)
        return
    stage = build_fetch_stage()
    last_attempt = receive_count >= get_settings().fetch_max_receive_count
    for event in parse_s3_notification(body):
        # Per event, and cleared after it: keys of one record never leak into the next one's lines.
        with log_context(request_id=message_id, doc_id=None):
            try:
                stage.handle_event(event, request_id=message_id, deadline=deadline)
            except PermanentError as error:
                logger.warning("object skipped", extra={"key": event.key, "reason": str(error)})
            except Exception as error:
                if last_attempt:
                    try:
                        stage.give_up(event, receive_count, error)
                    except Exception:
                        logger.exception("could not mark the document FAILED", extra={"key": event.key})
                raise


def handle_fetch_batch(event: dict[str, Any], context: Any) -> dict[str, list[dict[str, str]]]:
    """The fetch function's batch: each record gets a time budget from the invocation's remaining time.

    A record's budget is STRATUS_FETCH_RECORD_BUDGET_S or an equal share, among the records not
    yet started, of what is left before the function's timeout less STRATUS_FETCH_TIME_RESERVE_S,
    whichever is shorter. When less than MIN_RECORD_S is left, the records not started are reported
    as batch item failures (SQS delivers them again) instead of being cut off with the whole batch.
    """
    from stratus.pipeline.sqs import RecordBudget, batch_response, receive_count
    from stratus.settings import get_settings

    settings = get_settings()
    budget = RecordBudget(
        context, settings.fetch_record_budget_s, settings.fetch_time_reserve_s, MIN_RECORD_S
    )
    failed: list[str] = []
    records = list(event.get("Records", []))
    for number, record in enumerate(records):
        message_id = record.get("messageId", "")
        deadline = budget.next_deadline(len(records) - number)
        if deadline is None:
            failed.append(message_id)
            continue
        try:
            run_fetch_message(record["body"], message_id, receive_count(record), deadline=deadline)
        except TransientError as error:
            # Expected (a URL's 503, S3 throttling): one line, not a traceback per redelivery.
            logger.warning(
                "fetch record failed transiently; SQS delivers it again",
                extra={"message_id": message_id, "error": str(error)[:500]},
            )
            failed.append(message_id)
        except Exception:
            logger.exception("fetch record failed; SQS delivers it again", extra={"message_id": message_id})
            failed.append(message_id)
    skipped = budget.skipped
    if skipped:
        logger.warning("time short: records left for redelivery", extra={"records": skipped})
    return batch_response(failed)


def build_engine() -> SyncEngine:
    """The source sync engine wired to the process-wide stores, settings and the fetch stage."""
    from stratus import services
    from stratus.ingest.web import FetchOptions
    from stratus.settings import get_settings
    from stratus.sources.store import SourceStore
    from stratus.sources.sync import SyncConfig, SyncEngine
    from stratus.stores import aws

    settings = get_settings()
    sqs = aws.client("sqs")
    url = settings.fetch_queue_url

    def send(bodies: list[str]) -> None:
        if not bodies:
            return
        entries = [{"Id": str(i), "MessageBody": b} for i, b in enumerate(bodies)]
        response = sqs.send_message_batch(QueueUrl=url, Entries=entries)
        if response.get("Failed"):
            raise TransientError(f"SQS refused {len(response['Failed'])} sync message(s)")

    return SyncEngine(
        SourceStore(aws.client("dynamodb"), settings.sources_table),
        services.document_table(),
        build_fetch_stage(),
        send,
        aws.client("s3"),
        FetchOptions.from_settings(settings),
        SyncConfig(
            bucket=settings.bucket,
            inbox_prefix=settings.inbox_prefix,
            requests_per_s=settings.source_requests_per_s,
            stale_s=settings.source_sync_stale_s,
            user_agent=settings.url_user_agent,
        ),
    )


def handle_tick(event: dict[str, Any] | None = None, context: Any = None) -> dict[str, list[str]]:
    """The SourcesTick schedule's event: start due syncs, end interrupted ones."""
    engine = build_engine()
    return {"started": engine.run_due(), "failed": engine.watchdog()}
