"""Fetch function: S3 notifications (through SQS) in, staged chunk batches out."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from stratus.observability import logger, metrics, tracer
from stratus.pipeline.fetch_function import handle_fetch_batch


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, list[dict[str, str]]]:
    """Process a batch, each record within a time budget; failed records are reported for redelivery."""
    if "Records" not in event and event.get("source") == "aws.events":
        # The SourcesTick schedule: start due source syncs, end interrupted ones.
        from stratus.pipeline.fetch_function import handle_tick

        handle_tick(event, context)
        return {"batchItemFailures": []}
    return handle_fetch_batch(event, context)
