"""The one observability module: Powertools logger, tracer and metrics, and the metric names."""

from __future__ import annotations

import threading
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


# Powertools' metric set is a plain dict that it iterates when it flushes (every 100 values): the local
# API serves requests from a thread pool and the stages use worker threads, so every add goes through here.
_METRICS_LOCK = threading.Lock()


def emit_metric(name: MetricName, value: float, unit: str = "Count") -> None:
    """Add one value of a custom metric, safely from any thread."""
    with _METRICS_LOCK:
        metrics.add_metric(name=name, unit=unit, value=value)
