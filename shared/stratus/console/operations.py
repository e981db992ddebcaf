"""The Operations screen's figures: queue and DLQ depths, documents per status, p50/p95 latencies."""

from __future__ import annotations

import contextlib
from collections import Counter
from typing import Any

from stratus.console.metrics import MetricRecorder

STAGES = ("fetch", "embed", "index")


def queue_figures(sqs: Any, queue_urls: dict[str, str | None]) -> list[dict[str, Any]]:
    """Depth of each stage's queue and of its DLQ (the dashboard's queue and DLQ widgets)."""
    from stratus.stores.dead_letters import dead_letter_queue_url, queue_depth

    rows = []
    for stage in STAGES:
        url = queue_urls.get(stage)
        if not url:
            continue
        row: dict[str, Any] = {"stage": stage, "depth": queue_depth(sqs, url), "dlq_depth": None}
        with contextlib.suppress(ValueError):
            row["dlq_depth"] = queue_depth(sqs, dead_letter_queue_url(sqs, url))
        rows.append(row)
    return rows


def documents_by_status(
    documents: Any, collections: list[str], limit: int = 10000
) -> dict[str, dict[str, int]]:
    """Documents per status of each collection (the first `limit` documents of each)."""
    result: dict[str, dict[str, int]] = {}
    for collection in collections:
        counts: Counter[str] = Counter()
        cursor: str | None = None
        seen = 0
        while seen < limit:
            records, cursor = documents.list(collection, min(1000, limit - seen), cursor)
            counts.update(r.status.value for r in records)
            seen += len(records)
            if cursor is None:
                break
        result[collection] = dict(counts)
    return result


def snapshot(
    recorder: MetricRecorder,
    sqs: Any,
    queue_urls: dict[str, str | None],
    documents: Any,
    collections: list[str],
) -> dict[str, Any]:
    """Everything the Operations screen draws, named as the dashboard names it."""
    return {
        "queues": queue_figures(sqs, queue_urls),
        "documents": documents_by_status(documents, collections),
        "metrics": recorder.snapshot(),
        "scope": "this API process (locally: the whole stack); on AWS the dashboard has every instance",
    }
