"""The one observability module: Powertools logger, tracer and metrics, and the metric names."""

from __future__ import annotations

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
    STAGE_DURATION_MS = "StageDurationMs"
    SEARCH_REQUESTS = "SearchRequests"
    SEARCH_LATENCY_MS = "SearchLatencyMs"
    SEARCH_DEGRADED = "SearchDegraded"
    MAINTENANCE_RUNS = "MaintenanceRuns"
