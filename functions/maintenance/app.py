"""Maintenance function: scheduled compaction and index upkeep."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from stratus import services
from stratus.observability import logger, metrics, tracer
from stratus.pipeline.maintenance import run_maintenance
from stratus.settings import get_settings


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Maintain every collection and report what was done."""
    settings = get_settings()
    reports = run_maintenance(
        services.chunk_store(), settings.vector_index_min_rows, settings.keep_versions_s
    )
    return {"collections": reports}
