"""Maintenance: compact tables, refresh full-text indexes, prune versions, add ANN indexes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stratus.observability import MetricName, emit_metric, logger

if TYPE_CHECKING:
    from stratus.stores.vectors import ChunkStore


def run_maintenance(
    store: ChunkStore, vector_index_min_rows: int, keep_versions_s: float
) -> list[dict[str, Any]]:
    """Maintain every collection; one collection's failure does not stop the others."""
    reports = []
    for collection in store.collections():
        try:
            reports.append(store.maintain(collection, vector_index_min_rows, keep_versions_s))
        except Exception as error:
            logger.exception("maintenance failed", extra={"collection": collection})
            reports.append({"collection": collection, "error": type(error).__name__})
    emit_metric(MetricName.MAINTENANCE_RUNS, 1)
    return reports
