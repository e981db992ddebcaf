"""The one observability module: Powertools logger, tracer and metrics, and the metric names."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum

from aws_lambda_powertools import Logger, Metrics, Tracer

SERVICE = "stratus"
NAMESPACE = "Stratus"

logger = Logger(service=SERVICE)
tracer = Tracer(service=SERVICE)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)


class MetricName(StrEnum):
    """Every custom metric the code emits; the dashboard and alarms in template.yaml use these names."""

    DOCUMENTS_FETCHED = "DocumentsFetched"
    DOCUMENTS_UNCHANGED = "DocumentsUnchanged"
    DOCUMENTS_FAILED = "DocumentsFailed"
    DOCUMENTS_DELETED = "DocumentsDeleted"
    DOCUMENTS_INDEXED = "DocumentsIndexed"
    CHUNKS_PRODUCED = "ChunksProduced"
    CHUNKS_EMBEDDED = "ChunksEmbedded"
    CHUNKS_REUSED = "ChunksReused"
    CHUNKS_INDEXED = "ChunksIndexed"
    INGEST_LATENCY_MS = "IngestLatencyMs"
    SEARCH_REQUESTS = "SearchRequests"
    SEARCH_LATENCY_MS = "SearchLatencyMs"
    SEARCH_DEGRADED = "SearchDegraded"
    MAINTENANCE_RUNS = "MaintenanceRuns"
    CHAT_REQUESTS = "ChatRequests"
    CHAT_LATENCY_MS = "ChatLatencyMs"
    CHAT_ERRORS = "ChatErrors"
    CHAT_REFUSALS = "ChatRefusals"
    PROVIDER_CALLS = "ProviderCalls"
    PROVIDER_FAILURES = "ProviderFailures"
    PROVIDER_FALLBACKS = "ProviderFallbacks"
    CIRCUIT_OPEN = "CircuitOpen"
    TOKENS_IN = "TokensIn"
    TOKENS_OUT = "TokensOut"
    AUTH_FAILURES = "AuthFailures"
    RATE_LIMITED = "RateLimited"
    SYNCS_STARTED = "SyncsStarted"
    SYNCS_SUCCEEDED = "SyncsSucceeded"
    SYNCS_FAILED = "SyncsFailed"
    PAGES_FETCHED = "PagesFetched"
    PAGES_NOT_MODIFIED = "PagesNotModified"
    SOURCE_DELETIONS = "SourceDeletions"


# Powertools' metric set is a plain dict that it iterates when it flushes (every 100 values): the local
# API serves requests from a thread pool and the stages use worker threads, so every add goes through here.
_METRICS_LOCK = threading.Lock()
# Lists that capture_metrics() hands out: every emitted value is appended to each while it is open.
_CAPTURES: list[list[tuple[MetricName, float, str]]] = []
# Callables that see every emitted value (the console's in-process recorder of the Operations screen).
_SINKS: list[Callable[[MetricName, float, str], None]] = []


_TO_CLOUDWATCH = [True]


def keep_metrics_in_process() -> None:
    """This process is no function (the CLI running bulk ingestion): no EMF on its stdout from now on.

    Values still reach the sinks and captures; Powertools would print them every 100 values.
    """
    with _METRICS_LOCK:
        _TO_CLOUDWATCH[0] = False


def emit_metric(name: MetricName, value: float, unit: str = "Count") -> None:
    """Add one value of a custom metric, safely from any thread."""
    with _METRICS_LOCK:
        if _TO_CLOUDWATCH[0]:
            metrics.add_metric(name=name, unit=unit, value=value)
        for captured in _CAPTURES:
            captured.append((name, value, unit))
        for sink in _SINKS:
            sink(name, value, unit)


def add_metric_sink(sink: Callable[[MetricName, float, str], None]) -> None:
    """Also hand every emitted value to `sink` (called under the metrics lock: keep it quick)."""
    with _METRICS_LOCK:
        if sink not in _SINKS:
            _SINKS.append(sink)


@contextmanager
def capture_metrics() -> Iterator[list[tuple[MetricName, float, str]]]:
    """Record every (name, value, unit) emitted by this process, any thread, until the block ends."""
    captured: list[tuple[MetricName, float, str]] = []
    with _METRICS_LOCK:
        _CAPTURES.append(captured)
    try:
        yield captured
    finally:
        with _METRICS_LOCK:
            _CAPTURES.remove(captured)


# Correlation keys live in Powertools' context-variable keys, not append_keys (one dict shared by every
# thread): the local API serves requests from a thread pool and the stages work documents from threads.
@contextmanager
def log_context(**keys: str | None) -> Iterator[None]:
    """Add keys to every log line of this thread or task until the block ends (None removes a key)."""
    previous = dict(logger.thread_safe_get_current_keys())
    merged = {k: v for k, v in {**previous, **keys}.items() if v is not None}
    # Replaced wholesale, never mutated: the dict may be shared with contexts copied from this one.
    logger.thread_safe_clear_keys()
    logger.thread_safe_append_keys(**merged)
    try:
        yield
    finally:
        logger.thread_safe_clear_keys()
        if previous:
            logger.thread_safe_append_keys(**previous)


def current_request_id() -> str | None:
    """The request id of the log context of this thread or task, if any."""
    value = logger.thread_safe_get_current_keys().get("request_id")
    return str(value) if value else None
