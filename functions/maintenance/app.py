"""Maintenance function: scheduled compaction and index upkeep, and the dead-letter sweep."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from stratus import services
from stratus.observability import logger, metrics, tracer
from stratus.pipeline.maintenance import run_maintenance, sweep_all_dead_letters
from stratus.settings import get_settings


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Maintain every collection, mark dead-lettered documents FAILED, and report what was done."""
    from stratus.stores import aws

    settings = get_settings()
    reports = run_maintenance(
        services.chunk_store(), settings.vector_index_min_rows, settings.keep_versions_s
    )
    urls = {stage: getattr(settings, f"{stage}_queue_url") for stage in ("embed", "index")}
    sweeps = sweep_all_dead_letters(aws.client("sqs"), services.document_table(), urls)
    return {"collections": reports, "dead_letters": [s.to_json() for s in sweeps]}
